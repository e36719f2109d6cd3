//! The benchmark's load generator for a Unix domain socket, which wrk cannot reach: `GET`s over
//! HTTP/1.1 from a number of connections for a number of seconds, either each connection
//! keeping its socket (`keepalive`) or each request on a new one (`close`, `Connection: close`),
//! on two threads as `wrk -t2` runs. Every answer must be a 200 with a `Content-Length` body.
//!
//! Usage: `unix-load SOCKET PATH CONNECTIONS SECONDS keepalive|close HEADER`, for example
//! `unix-load /run/broker.sock /credentials/db0000 16 2 keepalive "Authorization: Bearer T"`.
//! Prints one line: `requests N seconds S requests/s R`; exits 1 at the first bad answer.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// One connection's requests until `deadline`; returns how many were answered.
async fn run(socket: String, request: Vec<u8>, keepalive: bool, deadline: Instant) -> u64 {
    let mut buffer = vec![0_u8; 16 * 1024];
    let mut answered = 0;
    let mut stream: Option<UnixStream> = None;
    while Instant::now() < deadline {
        let connection = match stream.as_mut() {
            Some(connection) => connection,
            None => stream.insert(UnixStream::connect(&socket).await.unwrap_or_else(|err| {
                fail(&format!("cannot connect to {socket}: {err}"));
            })),
        };
        connection
            .write_all(&request)
            .await
            .unwrap_or_else(|err| fail(&format!("cannot send: {err}")));
        read_answer(connection, &mut buffer).await;
        answered += 1;
        if !keepalive {
            // The server closes after its answer; read to the end so that it does first.
            let mut rest = [0_u8; 64];
            while connection.read(&mut rest).await.unwrap_or(0) > 0 {}
            stream = None;
        }
    }
    answered
}

/// Reads one answer from `connection`: a 200 status, headers, and a `Content-Length` body.
async fn read_answer(connection: &mut UnixStream, buffer: &mut [u8]) {
    let mut filled = 0;
    let (head_end, body_length) = loop {
        let read = connection
            .read(&mut buffer[filled..])
            .await
            .unwrap_or_else(|err| fail(&format!("cannot read: {err}")));
        if read == 0 {
            fail("the server closed the connection before its answer");
        }
        filled += read;
        if let Some(end) = memchr::memmem::find(&buffer[..filled], b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).unwrap_or_else(|_| fail("not UTF-8"));
            if !head.starts_with("HTTP/1.1 200 ") {
                fail(&format!("answer: {}", head.lines().next().unwrap_or("")));
            }
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or_else(|| fail("no Content-Length"));
            break (end + 4, length);
        }
        if filled == buffer.len() {
            fail("headers larger than the buffer");
        }
    };
    let mut body_read = filled - head_end;
    while body_read < body_length {
        let read = connection
            .read(&mut buffer[..])
            .await
            .unwrap_or_else(|err| fail(&format!("cannot read the body: {err}")));
        if read == 0 {
            fail("the server closed the connection in the body");
        }
        body_read += read;
    }
    if body_read != body_length {
        fail("more bytes than the answer: pipelining is not expected");
    }
}

fn fail(message: &str) -> ! {
    eprintln!("unix-load: {message}");
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, path, connections, seconds, mode, header] = args.as_slice() else {
        fail("usage: unix-load SOCKET PATH CONNECTIONS SECONDS keepalive|close HEADER");
    };
    let connections: usize = connections.parse().unwrap_or_else(|_| fail("CONNECTIONS"));
    let seconds: u64 = seconds.parse().unwrap_or_else(|_| fail("SECONDS"));
    let keepalive = match mode.as_str() {
        "keepalive" => true,
        "close" => false,
        _ => fail("the mode is keepalive or close"),
    };
    let close = if keepalive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{header}\r\n{close}\r\n");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|err| fail(&format!("runtime: {err}")));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let total: u64 = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                tokio::spawn(run(
                    socket.clone(),
                    request.clone().into_bytes(),
                    keepalive,
                    deadline,
                ))
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task
                .await
                .unwrap_or_else(|err| fail(&format!("task: {err}")));
        }
        total
    });
    let elapsed = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / elapsed;
    println!("requests {total} seconds {elapsed:.3} requests/s {rate:.1}");
}
