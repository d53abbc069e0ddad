//! Free loopback ports.

use std::net::{TcpListener, UdpSocket};

/// Attempts at finding one port free on both TCP and UDP.
const ATTEMPTS: usize = 100;

/// A loopback (127.0.0.1) port free on both TCP and UDP when this returns:
/// bound, read, released. Another process may take it before the caller
/// binds it; a caller that cannot tolerate that retries.
///
/// # Panics
/// When no such port is found.
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct loopback ports, each free on both TCP and UDP when this
/// returns: all are bound at once, then released (see [`free_port`]).
///
/// # Panics
/// When no such ports are found.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut held = Vec::with_capacity(N);
    std::array::from_fn(|_| {
        for _ in 0..ATTEMPTS {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
            let port = udp.local_addr().expect("a bound socket's address").port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
                held.push((udp, tcp));
                return port;
            }
        }
        panic!("no loopback port free on both UDP and TCP in {ATTEMPTS} attempts")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        // Released ports may be taken by tests running beside this one (as
        // the docs say), so a set counts as bindable if one of a few is.
        let mut taken = Vec::new();
        for _ in 0..10 {
            let ports: [u16; 4] = free_ports();
            for (i, p) in ports.iter().enumerate() {
                assert!(!ports[..i].contains(p), "{ports:?}");
                assert_ne!(*p, 0);
            }
            let bound: Result<Vec<_>, _> = ports
                .iter()
                .map(|p| {
                    Ok::<_, std::io::Error>((
                        TcpListener::bind(("127.0.0.1", *p))?,
                        UdpSocket::bind(("127.0.0.1", *p))?,
                    ))
                })
                .collect();
            match bound {
                Ok(_) => return,
                Err(e) => taken.push(e),
            }
        }
        panic!("no set of free ports was bindable: {taken:?}");
    }
}
