//! The broker's HTTP side as tests see it: the address it listens on (from its log) and
//! `/metrics` scraped into samples, its Prometheus text format checked on the way.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{Broker, IO_TIMEOUT};

/// The address from `sluice http: listening on ADDR (...)` in the broker's output.
pub fn http_addr(broker: &Broker) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let log = broker.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.starts_with("sluice http: listening on "))
        {
            return line
                .split_whitespace()
                .nth(4)
                .expect("address field")
                .to_string();
        }
        assert!(Instant::now() < deadline, "no http line in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(10)); // polling the log with a deadline
    }
}

pub fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect http");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    (head.to_string(), body.to_string())
}

/// Scrapes `/metrics` and parses every sample: `name{labels}` -> value. Checks the format:
/// a sample's metric has HELP and TYPE lines before it.
pub fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (head, body) = get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut typed = std::collections::HashSet::new();
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("name");
            let kind = parts.next().expect("kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let name = series.split('{').next().expect("name");
        assert!(typed.contains(name), "sample before its TYPE line: {line}");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(series.to_string(), value);
    }
    assert!(!samples.is_empty(), "no samples:\n{body}");
    samples
}
