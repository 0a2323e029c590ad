//! Limits per client address: concurrent WebSockets and handshakes per second, checked in
//! `GET /ws` before the upgrade (and before the token is looked at), answered HTTP 429.
//!
//! The client address is the TCP peer, unless the peer is a trusted proxy
//! (`Config::with_trusted_proxies`): then the `Forwarded` header (or, without it,
//! `X-Forwarded-For`) is read from the right, and the first address that is not a trusted
//! proxy is the client. IPv6 addresses count by their /64 (one host usually holds a whole
//! /64, so per-address counting would not limit it).
//!
//! The table is bounded: an entry is removed when its address holds no connection and its
//! handshake bucket has refilled, so it holds the addresses with open connections plus those
//! that started a handshake within the last `burst / rate` seconds (10 s by default).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::HeaderMap;
use ipnet::IpNet;
use tokio::time::Instant;

use crate::config::Config;

/// How many admissions between two sweeps of the idle entries.
const SWEEP_EVERY: u32 = 1024;

/// The per-address counts of one [`Tidings`](crate::Tidings).
#[derive(Debug)]
pub(crate) struct IpLimits {
    max_open: usize,
    rate: f64,
    burst: f64,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    since_sweep: u32,
}

#[derive(Debug)]
struct Entry {
    open: usize,
    tokens: f64,
    refilled: Instant,
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpRefused {
    /// The address holds its maximum of open WebSockets.
    TooManyConnections,
    /// The address started too many handshakes recently.
    TooManyHandshakes,
}

/// One counted WebSocket of one address; dropping it releases the slot.
#[derive(Debug)]
pub(crate) struct IpPermit {
    limits: Arc<IpLimits>,
    key: IpAddr,
}

impl IpLimits {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            max_open: config.max_connections_per_ip,
            rate: f64::from(config.handshake_rate_per_ip),
            burst: f64::from(config.handshake_burst_per_ip.max(1)),
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Every critical section leaves the map consistent.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one handshake and one open WebSocket for `ip`, unless a limit is reached.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpPermit, IpRefused> {
        let key = key(ip);
        let now = Instant::now();
        let mut table = self.table();
        table.since_sweep += 1;
        if table.since_sweep >= SWEEP_EVERY {
            table.since_sweep = 0;
            table.entries.retain(|_, e| !self.idle(e, now));
        }
        let entry = table.entries.entry(key).or_insert(Entry {
            open: 0,
            tokens: self.burst,
            refilled: now,
        });
        if self.max_open > 0 && entry.open >= self.max_open {
            return Err(IpRefused::TooManyConnections);
        }
        if self.rate > 0.0 {
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * self.rate).min(self.burst);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                return Err(IpRefused::TooManyHandshakes);
            }
            entry.tokens -= 1.0;
        }
        entry.open += 1;
        Ok(IpPermit {
            limits: self.clone(),
            key,
        })
    }

    /// Whether an entry can be forgotten: no connection, and a bucket that has refilled.
    fn idle(&self, entry: &Entry, now: Instant) -> bool {
        entry.open == 0
            && (self.rate <= 0.0
                || entry.tokens
                    + now.saturating_duration_since(entry.refilled).as_secs_f64() * self.rate
                    >= self.burst)
    }

    /// How many addresses the table holds.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table().entries.len()
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut table = self.limits.table();
        if let Some(entry) = table.entries.get_mut(&self.key) {
            entry.open = entry.open.saturating_sub(1);
            if self.limits.idle(entry, now) {
                table.entries.remove(&self.key);
            }
        }
    }
}

/// The counting key of an address: IPv4 (and IPv4-mapped IPv6) as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// The client address of a request from TCP peer `peer`: the peer itself, unless it is in
/// `trusted`, in which case the forwarding headers are read from the right and the first
/// address not in `trusted` is the client (the left-most one when all are trusted). A
/// malformed entry stops the walk at the last trusted hop.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_for(headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = hop else { break };
        client = *ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// An IPv4-mapped IPv6 address as IPv4 (so `127.0.0.1/8` matches `::ffff:127.0.0.1`).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The addresses a request went through, left (client) to right (last proxy): the `for=`
/// parameters of every `Forwarded` header, or, without one, every `X-Forwarded-For` entry.
/// `None` marks an entry that is not an address (`unknown`, an obfuscated name, garbage).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    let forwarded = headers.get_all(http::header::FORWARDED);
    if forwarded.iter().next().is_some() {
        for value in forwarded {
            let Ok(value) = value.to_str() else {
                hops.push(None);
                continue;
            };
            for element in value.split(',') {
                let node = element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then_some(value.trim())
                });
                hops.push(node.and_then(parse_node));
            }
        }
    } else {
        for value in headers.get_all("x-forwarded-for") {
            let Ok(value) = value.to_str() else {
                hops.push(None);
                continue;
            };
            hops.extend(value.split(',').map(|s| parse_node(s.trim())));
        }
    }
    hops
}

/// An address from a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`, optionally in double quotes.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

/// The open-file limit (soft `RLIMIT_NOFILE`) and the WebSockets it can hold after a reserve
/// of a tenth of it (at least 32, at most 1,024 descriptors).
pub(crate) fn connection_cap_from_open_file_limit() -> Option<(u64, usize)> {
    let (soft, _hard) = rlimit::Resource::NOFILE.get().ok()?;
    if soft == rlimit::INFINITY {
        return None;
    }
    let reserve = (soft / 10).clamp(32, 1024);
    let cap = soft.saturating_sub(reserve).max(1);
    Some((soft, usize::try_from(cap).unwrap_or(usize::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_open: usize, rate: u32, burst: u32) -> Arc<IpLimits> {
        Arc::new(IpLimits::new(
            &Config::new("s")
                .with_max_connections_per_ip(max_open)
                .with_handshake_rate_per_ip(rate, burst),
        ))
    }

    #[test]
    fn open_connections_are_limited_and_released() {
        let l = limits(2, 0, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = l.admit(ip).unwrap();
        let _b = l.admit(ip).unwrap();
        assert_eq!(l.admit(ip).unwrap_err(), IpRefused::TooManyConnections);
        assert!(l.admit("10.0.0.2".parse().unwrap()).is_ok());
        drop(a);
        let _c = l.admit(ip).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn handshakes_are_rate_limited_and_idle_entries_dropped() {
        let l = limits(0, 10, 3);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..3 {
            drop(l.admit(ip).unwrap());
        }
        // Same /64: the same bucket.
        let other: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(l.admit(other).unwrap_err(), IpRefused::TooManyHandshakes);
        assert_eq!(l.tracked(), 1);
        tokio::time::advance(std::time::Duration::from_millis(150)).await;
        drop(l.admit(ip).unwrap());
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        // The bucket refilled and nothing is open: the next release forgets the address.
        drop(l.admit(ip).unwrap());
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        drop(l.admit("10.0.0.9".parse().unwrap()).unwrap());
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer_proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.1.1.1, 198.51.100.7, 10.2.2.2".parse().unwrap(),
        );
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(
            client_ip(peer_proxy, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        h.insert(
            http::header::FORWARDED,
            r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            client_ip(peer_proxy, &h, &trusted),
            "2001:db8:cafe::17".parse::<IpAddr>().unwrap()
        );
        h.insert(http::header::FORWARDED, "for=unknown".parse().unwrap());
        assert_eq!(client_ip(peer_proxy, &h, &trusted), peer_proxy);
        assert_eq!(
            client_ip(peer_proxy, &HeaderMap::new(), &trusted),
            peer_proxy
        );
    }
}
