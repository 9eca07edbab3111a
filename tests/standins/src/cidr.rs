//! IP ranges: the Service ClusterIP range and the cluster's pod CIDR.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, as a number (IPv4 in the low 32 bits).
    pub base: u128,
    pub bits: u8,
    pub v6: bool,
}

fn to_num(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), false),
        IpAddr::V6(a) => (u128::from(a), true),
    }
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, bits) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("invalid CIDR address: {s}"))?;
        let bits: u8 = bits
            .parse()
            .map_err(|_| format!("invalid CIDR address: {s}"))?;
        let (n, v6) = to_num(ip);
        let width = if v6 { 128 } else { 32 };
        if bits > width {
            return Err(format!("invalid CIDR address: {s}"));
        }
        let host = width - bits;
        let mask = if host >= 128 {
            0
        } else {
            !((1u128 << host) - 1)
        };
        Ok(Cidr {
            base: n & mask,
            bits,
            v6,
        })
    }

    fn width(&self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }

    /// How many addresses (saturating at u128::MAX).
    pub fn size(&self) -> u128 {
        let host = self.width() - self.bits;
        1u128.checked_shl(u32::from(host)).unwrap_or(u128::MAX)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (n, v6) = to_num(ip);
        v6 == self.v6 && n >= self.base && n - self.base < self.size()
    }

    /// The `i`th address of the range.
    pub fn nth(&self, i: u128) -> IpAddr {
        let n = self.base + i;
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
        }
    }

    /// The `i`th subnet of prefix length `bits` inside this range, if there is one.
    pub fn subnet(&self, bits: u8, i: u128) -> Option<Cidr> {
        if bits < self.bits || bits > self.width() {
            return None;
        }
        let count = 1u128.checked_shl(u32::from(bits - self.bits))?;
        if i >= count {
            return None;
        }
        let step = 1u128.checked_shl(u32::from(self.width() - bits))?;
        Some(Cidr {
            base: self.base + i * step,
            bits,
            v6: self.v6,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.nth(0), self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let c = Cidr::parse("10.96.0.0/12").unwrap();
        assert_eq!(c.nth(1).to_string(), "10.96.0.1");
        assert!(c.contains("10.111.255.255".parse().unwrap()));
        assert!(!c.contains("10.112.0.0".parse().unwrap()));
        assert_eq!(
            Cidr::parse("10.244.3.7/16").unwrap().to_string(),
            "10.244.0.0/16"
        );
        let p = Cidr::parse("10.244.0.0/16").unwrap();
        assert_eq!(p.subnet(24, 2).unwrap().to_string(), "10.244.2.0/24");
        assert!(p.subnet(24, 256).is_none());
        let v6 = Cidr::parse("fd00::/108").unwrap();
        assert_eq!(v6.nth(1).to_string(), "fd00::1");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }
}
