//! Framing and tracking cost per byte of a realistic server response: a
//! result set of 1,000 rows of ~100 bytes, fed in 16 KiB chunks (what one
//! socket read returns), and the same in 1-byte chunks (the worst case).
//! Run: `cargo bench -p carbide-proxy --bench framer`.

use carbide_proxy::packet::{write_packet, Framer};
use carbide_proxy::tracker::Tracker;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

fn result_set(rows: usize) -> Vec<u8> {
    let mut b = Vec::new();
    let mut seq = 1u8;
    let mut put = |b: &mut Vec<u8>, p: &[u8]| {
        write_packet(b, seq, p);
        seq = seq.wrapping_add(1);
    };
    put(&mut b, &[3]);
    for _ in 0..3 {
        put(
            &mut b,
            &[
                0x03, b'd', b'e', b'f', 0, 0, 0, 1, b'c', 0, 0x0c, 0x3f, 0, 11, 0, 0, 0, 3, 0, 0,
                0, 0,
            ],
        );
    }
    put(&mut b, &[0xfe, 0, 0, 2, 0]);
    let row: Vec<u8> = [&[4u8][..], b"1234", &[60], &[b'x'; 60], &[30], &[b'y'; 30]].concat();
    for _ in 0..rows {
        put(&mut b, &row);
    }
    put(&mut b, &[0xfe, 0, 0, 2, 0]);
    b
}

fn bench(c: &mut Criterion) {
    let data = result_set(1000);
    let mut g = c.benchmark_group("framer");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for chunk in [16 * 1024, 1] {
        g.bench_function(format!("result_set_1000_rows_chunk_{chunk}"), |b| {
            b.iter_batched(
                || {
                    let mut t = Tracker::new(false);
                    let mut f = Framer::new();
                    f.feed(b"\x0b\x00\x00\x00\x03SELECT 1234", |m| {
                        t.client_message(m);
                    });
                    t
                },
                |mut t| {
                    let mut f = Framer::new();
                    let mut done = 0;
                    for c in data.chunks(chunk) {
                        f.feed(black_box(c), |m| {
                            done += t.server_message(m).is_some() as u32
                        });
                    }
                    assert_eq!(done, 1);
                    t
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
