//! Conformance suites that every storage and transport implementation runs
//! against itself (enable the `testing` feature).

pub mod storage;
pub mod transport;

/// A port on 127.0.0.1 for a server that a test starts later, in this process
/// or in a child.
///
/// Ports come from 20000..32000, below Linux's ephemeral range (32768 up), so
/// the kernel never hands one to an outgoing connection meanwhile, as it may
/// with a port found by binding `:0` and letting go. A process never gets the
/// same port twice, each process starts at its own place in the range, and
/// the port was free (TCP and UDP, for QUIC) when checked.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let spread = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        AtomicU32::new((spread % u64::from(SPAN)) as u32)
    });
    for _ in 0..SPAN {
        let port = (LOW + next.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port on 127.0.0.1 in {LOW}..{}", LOW + SPAN),
    ))
}
