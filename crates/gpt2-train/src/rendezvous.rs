//! The TCP rendezvous (llm.c's `-pi tcp`, torchrun's `MASTER_ADDR:MASTER_PORT`): rank 0 serves
//! a few bytes (the NCCL unique id) to every other rank. Used where no MPI world exists to
//! broadcast them (torchrun, srun without MPI). Every wait is bounded by `timeout`, and a missing
//! peer is an error that says which ranks never came.
//!
//! Wire format, after connecting: the peer sends `MAGIC` and its rank (u64 LE); rank 0 answers
//! with the payload's length (u32 LE) and the payload.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{Result, TrainError};

const MAGIC: &[u8; 8] = b"gpt2rdv1";

fn failed(message: String) -> TrainError {
    TrainError::Distributed {
        message,
        hint: "check that every rank started, that all agree on MASTER_ADDR and MASTER_PORT, \
               and that rank 0's node accepts connections on that port"
            .into(),
    }
}

/// Rank 0's `payload` on every rank of `world_size`: rank 0 listens on `master`'s port (on every
/// interface) and answers each other rank; the others connect to `master`, retrying until
/// `timeout`.
pub fn share(
    rank: usize,
    world_size: usize,
    master: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    if rank == 0 {
        serve(world_size, master, payload, deadline, timeout)?;
        Ok(payload.to_vec())
    } else {
        fetch(rank, master, deadline, timeout)
    }
}

fn serve(
    world_size: usize,
    master: &str,
    payload: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    let port = master
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| failed(format!("rendezvous address `{master}` has no port")))?;
    // Every interface, IPv6 and IPv4 (a dual-stack socket), or IPv4 alone where IPv6 is off.
    let listener = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .map_err(|e| {
            failed(format!(
                "rank 0 cannot listen on port {port} ({master}): {e}"
            ))
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| failed(format!("rank 0: {e}")))?;
    let mut seen = vec![false; world_size];
    seen[0] = true;
    while seen.iter().any(|s| !s) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                // A stranger (a port scan, another job) is dropped, not fatal.
                let _ = stream.set_nonblocking(false);
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = stream.set_read_timeout(Some(
                    left.clamp(Duration::from_millis(100), Duration::from_secs(5)),
                ));
                let mut hello = [0u8; 16];
                if stream.read_exact(&mut hello).is_err() || &hello[..8] != MAGIC {
                    eprintln!("warning: rendezvous: ignoring a connection from {from} that is not a gpt2 rank");
                    continue;
                }
                let r = u64::from_le_bytes(hello[8..].try_into().expect("8 bytes")) as usize;
                if r == 0 || r >= world_size {
                    return Err(failed(format!(
                        "rendezvous: a rank {r} connected from {from}, but the world has ranks 0..{world_size}"
                    )));
                }
                if seen[r] {
                    return Err(failed(format!(
                        "rendezvous: rank {r} connected twice (the second from {from}): two processes with one rank"
                    )));
                }
                let mut msg = (payload.len() as u32).to_le_bytes().to_vec();
                msg.extend_from_slice(payload);
                stream.write_all(&msg).map_err(|e| {
                    failed(format!("rendezvous: answering rank {r} at {from}: {e}"))
                })?;
                seen[r] = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = seen
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| !**s)
                        .map(|(r, _)| r.to_string())
                        .collect();
                    return Err(failed(format!(
                        "rank 0 waited {:.0} s on port {port} and heard from {} of {world_size} ranks (missing: {})",
                        timeout.as_secs_f64(),
                        world_size - missing.len(),
                        missing.join(", ")
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(failed(format!("rank 0 accepting on port {port}: {e}"))),
        }
    }
    Ok(())
}

fn fetch(rank: usize, master: &str, deadline: Instant, timeout: Duration) -> Result<Vec<u8>> {
    let mut last_error: String;
    loop {
        // Each address the name resolves to, in turn (IPv6 and IPv4 alike).
        let attempt = master
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|addrs| {
                let mut last = "no address".to_string();
                for a in addrs {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match TcpStream::connect_timeout(&a, left.max(Duration::from_millis(1))) {
                        Ok(s) => return Ok(s),
                        Err(e) => last = format!("{a}: {e}"),
                    }
                }
                Err(last)
            });
        match attempt {
            Ok(mut stream) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(100))));
                let mut hello = MAGIC.to_vec();
                hello.extend_from_slice(&(rank as u64).to_le_bytes());
                let mut len = [0u8; 4];
                let got = stream
                    .write_all(&hello)
                    .and_then(|_| stream.read_exact(&mut len))
                    .and_then(|_| {
                        let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
                        stream.read_exact(&mut payload).map(|_| payload)
                    });
                match got {
                    Ok(p) => return Ok(p),
                    Err(e) => last_error = e.to_string(),
                }
            }
            Err(e) => last_error = e,
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "rank {rank} could not get the rendezvous from rank 0 at {master} within {:.0} s (last: {last_error})",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Three ranks on 127.0.0.1, the peers started before rank 0 listens (they retry): every
    /// rank gets rank 0's bytes.
    #[test]
    fn three_ranks_share_rank_0s_bytes_on_localhost() {
        let master = format!("127.0.0.1:{}", free_port());
        let id: Vec<u8> = (0..128u8).collect();
        let t = Duration::from_secs(30);
        let peers: Vec<_> = (1..3)
            .map(|r| {
                let m = master.clone();
                std::thread::spawn(move || share(r, 3, &m, &[], t))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(share(0, 3, &master, &id, t).unwrap(), id);
        for p in peers {
            assert_eq!(p.join().unwrap().unwrap(), id);
        }
    }

    /// A peer that never comes: rank 0 gives up after the timeout and names it; a peer with no
    /// rank 0 gives up too. Both within the timeout plus a margin, never a hang.
    #[test]
    fn a_missing_peer_times_out_with_a_clear_error() {
        let master = format!("127.0.0.1:{}", free_port());
        let t = Duration::from_millis(800);
        let start = Instant::now();
        let e = share(0, 3, &master, b"id", t).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(
            e.contains("heard from 1 of 3 ranks (missing: 1, 2)") && e.contains("MASTER_PORT"),
            "{e}"
        );
        let start = Instant::now();
        let e = share(2, 3, &master, &[], t).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(
            e.contains("rank 2 could not get the rendezvous from rank 0"),
            "{e}"
        );
    }

    /// A connection that is not a rank (a port scan) is ignored, and a rank out of range is an
    /// error naming it.
    #[test]
    fn strangers_are_ignored_and_bad_ranks_refused() {
        let master = format!("127.0.0.1:{}", free_port());
        let m = master.clone();
        let server = std::thread::spawn(move || share(0, 2, &m, b"x", Duration::from_secs(30)));
        let connect = || loop {
            if let Ok(s) = TcpStream::connect(&master) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        connect().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut bad = connect();
        bad.write_all(MAGIC).unwrap();
        bad.write_all(&7u64.to_le_bytes()).unwrap();
        let e = server.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("a rank 7 connected"), "{e}");
    }
}
