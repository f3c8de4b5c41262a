//! A TCP fault proxy to put on any link of a test: pass, refuse, blackhole,
//! reset, delay.
//!
//! `FaultProxy::start(target_port)` listens on a free loopback port and
//! forwards every connection to `127.0.0.1:target_port`. `set(Mode)`
//! changes what it does, for new and open connections alike:
//! - `Pass`: forward both ways.
//! - `Refuse`: new connections are closed at once; open ones are reset.
//! - `Blackhole`: connections are accepted and held, nothing is forwarded
//!   either way (a hung host or a silently dropping network).
//! - `Reset`: open connections are reset; new ones pass.
//! - `Delay(d)`: forward, each chunk held back `d`.
//!
//! It runs on its own thread and runtime, so a test that blocks does not
//! stall it; dropping it stops it.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Pass,
    /// Close new connections, reset open ones.
    Refuse,
    /// Hold connections, forward nothing.
    Blackhole,
    /// Reset open connections once; new ones pass.
    Reset,
    /// Forward with each chunk delayed.
    Delay(Duration),
}

/// A running fault proxy.
pub struct FaultProxy {
    /// The port clients connect to.
    pub port: u16,
    mode: Arc<watch::Sender<(Mode, u64)>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:target`, in mode `Pass`.
    pub fn start(target: u16) -> FaultProxy {
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", super::free_port())).expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let mode = Arc::new(watch::Sender::new((Mode::Pass, 0u64)));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let m = mode.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(serve(client, target, m.subscribe()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        FaultProxy {
            port,
            mode,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Changes the mode for new and open connections.
    pub fn set(&self, mode: Mode) {
        self.mode.send_modify(|(m, gen)| {
            *m = mode;
            *gen += 1;
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reset(s: TcpStream) {
    drop(s);
}

async fn serve(client: TcpStream, target: u16, mut mode: watch::Receiver<(Mode, u64)>) {
    let (now, start_gen) = *mode.borrow_and_update();
    match now {
        Mode::Refuse => return reset(client),
        Mode::Blackhole => {
            // hold it until the mode changes, then close it
            let _ = mode.changed().await;
            return reset(client);
        }
        _ => {}
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return reset(client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let mut delay;
    let mut held = false;
    loop {
        if held {
            // blackholed: forward nothing until the mode changes
            if mode.changed().await.is_err() {
                return;
            }
        }
        let (m, gen) = *mode.borrow_and_update();
        match m {
            Mode::Refuse => return,
            Mode::Reset if gen != start_gen => return,
            Mode::Blackhole => {
                held = true;
                continue;
            }
            Mode::Delay(d) => delay = d,
            _ => delay = Duration::ZERO,
        }
        held = false;
        tokio::select! {
            r = cr.read(&mut buf_a) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                if !delay.is_zero() { tokio::time::sleep(delay).await; }
                if sw.write_all(&buf_a[..n]).await.is_err() { return; }
            }
            r = sr.read(&mut buf_b) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                if !delay.is_zero() { tokio::time::sleep(delay).await; }
                if cw.write_all(&buf_b[..n]).await.is_err() { return; }
            }
            r = mode.changed() => if r.is_err() { return },
        }
    }
}
