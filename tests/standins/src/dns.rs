//! A small DNS wire implementation (RFC 1035) for the CoreDNS stand-in: parse a query,
//! build answers (A, AAAA, SRV, PTR, CNAME, SOA), NXDOMAIN/SERVFAIL replies.

use std::net::IpAddr;

pub const A: u16 = 1;
pub const NS: u16 = 2;
pub const CNAME: u16 = 5;
pub const SOA: u16 = 6;
pub const PTR: u16 = 12;
pub const HINFO: u16 = 13;
pub const TXT: u16 = 16;
pub const AAAA: u16 = 28;
pub const SRV: u16 = 33;
pub const OPT: u16 = 41;

pub const NOERROR: u8 = 0;
pub const SERVFAIL: u8 = 2;
pub const NXDOMAIN: u8 = 3;
pub const REFUSED: u8 = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub id: u16,
    pub rd: bool,
    /// Lowercase, fully qualified (`web.default.svc.cluster.local.`).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

pub fn type_name(t: u16) -> String {
    match t {
        A => "A".into(),
        NS => "NS".into(),
        CNAME => "CNAME".into(),
        SOA => "SOA".into(),
        PTR => "PTR".into(),
        HINFO => "HINFO".into(),
        TXT => "TXT".into(),
        AAAA => "AAAA".into(),
        SRV => "SRV".into(),
        t => format!("TYPE{t}"),
    }
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut hops = 0;
    loop {
        let len = *msg.get(pos).ok_or("name runs past the message")? as usize;
        if len & 0xc0 == 0xc0 {
            let lo = *msg.get(pos + 1).ok_or("truncated pointer")? as usize;
            if end.is_none() {
                end = Some(pos + 2);
            }
            pos = ((len & 0x3f) << 8) | lo;
            hops += 1;
            if hops > 16 {
                return Err("compression loop".into());
            }
            continue;
        }
        pos += 1;
        if len == 0 {
            break;
        }
        let l = msg
            .get(pos..pos + len)
            .ok_or("label runs past the message")?;
        labels.push(String::from_utf8_lossy(l).to_lowercase());
        pos += len;
    }
    let name = if labels.is_empty() {
        ".".to_string()
    } else {
        format!("{}.", labels.join("."))
    };
    Ok((name, end.unwrap_or(pos)))
}

pub fn parse_query(msg: &[u8]) -> Result<Query, String> {
    if msg.len() < 12 {
        return Err("short message".into());
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    if msg[2] & 0x80 != 0 {
        return Err("not a query".into());
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    if qd != 1 {
        return Err(format!("{qd} questions"));
    }
    let (name, pos) = read_name(msg, 12)?;
    let t = msg.get(pos..pos + 4).ok_or("truncated question")?;
    Ok(Query {
        id,
        rd: msg[2] & 0x01 != 0,
        name,
        qtype: u16::from_be_bytes([t[0], t[1]]),
        qclass: u16::from_be_bytes([t[2], t[3]]),
    })
}

pub fn encode_name(name: &str, out: &mut Vec<u8>) {
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let b = l.as_bytes();
        out.push(u8::try_from(b.len().min(63)).unwrap_or(63));
        out.extend_from_slice(&b[..b.len().min(63)]);
    }
    out.push(0);
}

/// A query message (for the tests' and the loop check's clients).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    encode_name(name, &mut m);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Ip(IpAddr),
    /// A name (CNAME, PTR).
    Name(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Soa {
        mname: String,
        rname: String,
        serial: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    pub data: Data,
}

fn encode_record(r: &Record, out: &mut Vec<u8>) {
    encode_name(&r.name, out);
    out.extend_from_slice(&r.rtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&r.ttl.to_be_bytes());
    let mut rd = Vec::new();
    match &r.data {
        Data::Ip(IpAddr::V4(a)) => rd.extend_from_slice(&a.octets()),
        Data::Ip(IpAddr::V6(a)) => rd.extend_from_slice(&a.octets()),
        Data::Name(n) => encode_name(n, &mut rd),
        Data::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            rd.extend_from_slice(&priority.to_be_bytes());
            rd.extend_from_slice(&weight.to_be_bytes());
            rd.extend_from_slice(&port.to_be_bytes());
            encode_name(target, &mut rd);
        }
        Data::Soa {
            mname,
            rname,
            serial,
        } => {
            encode_name(mname, &mut rd);
            encode_name(rname, &mut rd);
            for v in [*serial, 7200, 1800, 86400, 30] {
                rd.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&u16::try_from(rd.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&rd);
}

/// A reply to `q`: rcode, answers, authority, additional.
pub fn reply(
    q: &Query,
    rcode: u8,
    authoritative: bool,
    answer: &[Record],
    authority: &[Record],
    additional: &[Record],
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&q.id.to_be_bytes());
    let mut f1 = 0x80u8;
    if authoritative {
        f1 |= 0x04;
    }
    if q.rd {
        f1 |= 0x01;
    }
    m.push(f1);
    m.push(0x80 | (rcode & 0x0f));
    let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();
    m.extend_from_slice(&count(1));
    m.extend_from_slice(&count(answer.len()));
    m.extend_from_slice(&count(authority.len()));
    m.extend_from_slice(&count(additional.len()));
    encode_name(&q.name, &mut m);
    m.extend_from_slice(&q.qtype.to_be_bytes());
    m.extend_from_slice(&q.qclass.to_be_bytes());
    for r in answer.iter().chain(authority).chain(additional) {
        encode_record(r, &mut m);
    }
    m
}

/// A parsed reply (for clients): rcode and the answer section's (name, type, data).
#[derive(Debug)]
pub struct Parsed {
    pub id: u16,
    pub rcode: u8,
    pub answers: Vec<Record>,
}

pub fn parse_reply(msg: &[u8]) -> Result<Parsed, String> {
    if msg.len() < 12 {
        return Err("short reply".into());
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let rcode = msg[3] & 0x0f;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        let (name, p) = read_name(msg, pos)?;
        let h = msg.get(p..p + 10).ok_or("truncated record")?;
        let rtype = u16::from_be_bytes([h[0], h[1]]);
        let ttl = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let len = u16::from_be_bytes([h[8], h[9]]) as usize;
        let rd_at = p + 10;
        let rd = msg.get(rd_at..rd_at + len).ok_or("truncated rdata")?;
        let data = match rtype {
            A if len == 4 => Data::Ip(IpAddr::from([rd[0], rd[1], rd[2], rd[3]])),
            AAAA if len == 16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rd);
                Data::Ip(IpAddr::from(b))
            }
            SRV => Data::Srv {
                priority: u16::from_be_bytes([rd[0], rd[1]]),
                weight: u16::from_be_bytes([rd[2], rd[3]]),
                port: u16::from_be_bytes([rd[4], rd[5]]),
                target: read_name(msg, rd_at + 6)?.0,
            },
            _ => Data::Name(read_name(msg, rd_at).map(|n| n.0).unwrap_or_default()),
        };
        answers.push(Record {
            name,
            rtype,
            ttl,
            data,
        });
        pos = rd_at + len;
    }
    Ok(Parsed { id, rcode, answers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_roundtrip_and_reply() {
        let m = build_query(7, "Web.Default.svc.cluster.local.", A);
        let q = parse_query(&m).unwrap();
        assert_eq!(q.name, "web.default.svc.cluster.local.");
        assert_eq!((q.id, q.qtype, q.rd), (7, A, true));
        let r = reply(
            &q,
            NOERROR,
            true,
            &[Record {
                name: q.name.clone(),
                rtype: A,
                ttl: 5,
                data: Data::Ip("10.96.0.50".parse().unwrap()),
            }],
            &[],
            &[],
        );
        let p = parse_reply(&r).unwrap();
        assert_eq!(p.id, 7);
        assert_eq!(p.rcode, NOERROR);
        assert_eq!(p.answers[0].data, Data::Ip("10.96.0.50".parse().unwrap()));
    }
}
