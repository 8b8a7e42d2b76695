//! Incremental transactions as nf_tables netlink messages, without libnftables.
//!
//! libnftables fetches a cache before every transaction (the table's chains, sets, objects and
//! the elements of auto-merge sets), so even a one-element change costs time in proportion to
//! the table. The diff already knows everything a transaction needs, so for incremental
//! changes the [`Op`]s are encoded here directly as one nfnetlink batch
//! (`NFNL_MSG_BATCH_BEGIN`, the nf_tables messages, `NFNL_MSG_BATCH_END`) and sent on a
//! `NETLINK_NETFILTER` socket: nothing is read first.
//!
//! The encoder is table-driven and strict: it produces exactly the expressions `nft` 1.0.6
//! generates for the statements it knows (the tests compare the kernel's listings of both
//! paths for every policy case), and refuses anything else ([`Unencodable`]). A transaction
//! with any refused op goes through libnftables instead, so new grammar in the renderer is
//! slower, never wrong.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::render::TABLE;
use crate::table::{Op, Position, SetKind, Table, coverage};

/// Why a transaction cannot be encoded here (it then goes through libnftables).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not encodable as netlink: {0}")]
pub struct Unencodable(pub String);

fn no<T>(what: impl Into<String>) -> Result<T, Unencodable> {
    Err(Unencodable(what.into()))
}

/// What the kernel refused, or why the batch could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the kernel refused {what}: {source}")]
    Refused {
        what: String,
        source: std::io::Error,
    },
    #[error("the kernel did not acknowledge the transaction")]
    NoAck,
}

// Netlink and nfnetlink (linux/netlink.h, linux/netfilter/nfnetlink.h).
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_ECHO: u16 = 0x8;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;

// nf_tables messages (linux/netfilter/nf_tables.h).
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

// Attributes.
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFTA_SET_USERDATA: u16 = 13;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFT_SET_ELEM_CATCHALL: u32 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

// Verdicts (linux/netfilter.h, nf_tables.h).
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

// Registers.
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
/// The first 32-bit register (`NFT_REG32_00`); concatenations fill these in turn.
const NFT_REG32_00: u32 = 8;

// Expressions' attributes.
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
const NFT_META_MARK: u32 = 3;
const NFT_META_IIF: u32 = 4;
const NFT_META_OIF: u32 = 5;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_GTE: u32 = 5;
const NFTA_RANGE_SREG: u16 = 1;
const NFTA_RANGE_OP: u16 = 2;
const NFTA_RANGE_FROM_DATA: u16 = 3;
const NFTA_RANGE_TO_DATA: u16 = 4;
const NFT_RANGE_NEQ: u32 = 1;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 2;
/// `RTN_LOCAL`: the address type `fib daddr type local` compares with.
const RTN_LOCAL: u32 = 2;
const NFTA_LOG_GROUP: u16 = 1;
const NFTA_LOG_PREFIX: u16 = 2;
const NFTA_LIMIT_RATE: u16 = 1;
const NFTA_LIMIT_UNIT: u16 = 2;
const NFTA_LIMIT_BURST: u16 = 3;
const NFTA_LIMIT_TYPE: u16 = 4;
const NFTA_LIMIT_FLAGS: u16 = 5;
const NFT_LIMIT_PKTS: u32 = 0;
/// The comment's type in a rule's user data (libnftnl's `NFTNL_UDATA_RULE_COMMENT`).
const UDATA_RULE_COMMENT: u8 = 0;
/// Interface names are compared over this many bytes (`IFNAMSIZ`).
const IFNAMSIZ: usize = 16;

/// Netlink attributes being written into a buffer.
struct Attrs<'a>(&'a mut Vec<u8>);

impl Attrs<'_> {
    fn put(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.0.extend((len as u16).to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }

    fn str(&mut self, kind: u16, s: &str) {
        let len = 4 + s.len() + 1;
        self.0.extend((len as u16).to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(s.as_bytes());
        self.0.push(0);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }

    fn be32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_be_bytes());
    }

    fn be64(&mut self, kind: u16, v: u64) {
        self.put(kind, &v.to_be_bytes());
    }

    fn nest(&mut self, kind: u16, body: impl FnOnce(&mut Attrs<'_>)) {
        let start = self.0.len();
        self.0.extend([0, 0]);
        self.0.extend((kind | NLA_F_NESTED).to_ne_bytes());
        body(&mut Attrs(self.0));
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn data(&mut self, kind: u16, value: &[u8]) {
        self.nest(kind, |a| a.put(NFTA_DATA_VALUE, value));
    }

    fn verdict(&mut self, kind: u16, v: &Verdict) {
        self.nest(kind, |a| {
            a.nest(NFTA_DATA_VERDICT, |a| {
                a.put(NFTA_VERDICT_CODE, &v.code.to_be_bytes());
                if let Some(chain) = &v.chain {
                    a.str(NFTA_VERDICT_CHAIN, chain);
                }
            })
        });
    }
}

/// One nfnetlink batch: the nf_tables messages of one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    /// What each message does, for error messages: the descriptions, one after the other in
    /// one string (a message's is written there, not allocated), and where each ends (by
    /// sequence number, from 1).
    what: String,
    what_ends: Vec<usize>,
    /// The messages adding rules, which ask the kernel to echo them (with their handles): each
    /// one's sequence number and the index of its op.
    rules: Vec<(u32, usize)>,
}

impl Batch {
    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        let seq = self.what_ends.len() as u32;
        self.buf.extend(0u32.to_ne_bytes());
        self.buf.extend(kind.to_ne_bytes());
        self.buf.extend((NLM_F_REQUEST | flags).to_ne_bytes());
        self.buf.extend(seq.to_ne_bytes());
        self.buf.extend(0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, resource id (big-endian).
        self.buf.extend([family, 0]);
        self.buf.extend(res_id.to_be_bytes());
        start
    }

    fn finish(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Appends one nf_tables message; `body` writes its attributes.
    fn message(
        &mut self,
        msg: u16,
        flags: u16,
        what: std::fmt::Arguments<'_>,
        body: impl FnOnce(&mut Attrs<'_>),
    ) {
        use std::fmt::Write as _;
        let _ = self.what.write_fmt(what);
        self.what_ends.push(self.what.len());
        let start = self.header((NFNL_SUBSYS_NFTABLES << 8) | msg, flags, NFPROTO_INET, 0);
        body(&mut Attrs(&mut self.buf));
        self.finish(start);
    }

    /// Size of the messages.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Messages in the batch (without its begin and end).
    pub fn len(&self) -> usize {
        self.what_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.what_ends.is_empty()
    }

    /// What message `seq` (from 1) does.
    fn describe(&self, seq: usize) -> Option<&str> {
        let end = *self.what_ends.get(seq.checked_sub(1)?)?;
        let start = seq
            .checked_sub(2)
            .and_then(|i| self.what_ends.get(i))
            .copied()
            .unwrap_or(0);
        self.what.get(start..end)
    }

    /// The bytes to send: begin, the messages (the last one asking for an acknowledgement),
    /// end. Sequence numbers: begin 0, messages 1..=n, end n + 1.
    fn framed(&self) -> Vec<u8> {
        let mut out = Batch::default();
        let b = out.header(NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES);
        out.finish(b);
        let mut body = self.buf.clone();
        // Set NLM_F_ACK on the last message: its acknowledgement says the batch was read.
        let mut at = 0;
        let mut last = None;
        while at + 16 <= body.len() {
            let len = u32::from_ne_bytes(body[at..at + 4].try_into().expect("4 bytes")) as usize;
            last = Some(at);
            at += len;
        }
        if let Some(l) = last {
            let flags = u16::from_ne_bytes([body[l + 6], body[l + 7]]) | NLM_F_ACK;
            body[l + 6..l + 8].copy_from_slice(&flags.to_ne_bytes());
        }
        // Renumber the messages from 1. The rules' echoes must fit in the socket's receive
        // buffer with the acknowledgements: a larger batch asks for none (its chains' handles
        // are then unknown, and their next change rewrites them).
        let echo = self.buf.len() <= ECHO_MAX;
        let mut at = 0;
        let mut seq = 1u32;
        while at + 16 <= body.len() {
            let len = u32::from_ne_bytes(body[at..at + 4].try_into().expect("4 bytes")) as usize;
            body[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
            if !echo {
                let flags = u16::from_ne_bytes([body[at + 6], body[at + 7]]) & !NLM_F_ECHO;
                body[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
            }
            seq += 1;
            at += len;
        }
        out.buf.extend(body);
        out.what_ends = vec![0; self.what_ends.len() + 1];
        let e = out.header(NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES);
        out.finish(e);
        out.buf
    }
}

/// A verdict: its code and, for jump and goto, the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Verdict {
    code: i32,
    chain: Option<String>,
}

fn verdict(words: &[&str]) -> Result<Verdict, Unencodable> {
    Ok(match words {
        ["accept"] => Verdict {
            code: NF_ACCEPT,
            chain: None,
        },
        ["drop"] => Verdict {
            code: NF_DROP,
            chain: None,
        },
        ["continue"] => Verdict {
            code: NFT_CONTINUE,
            chain: None,
        },
        ["return"] => Verdict {
            code: NFT_RETURN,
            chain: None,
        },
        ["jump", c] => Verdict {
            code: NFT_JUMP,
            chain: Some((*c).to_owned()),
        },
        ["goto", c] => Verdict {
            code: NFT_GOTO,
            chain: Some((*c).to_owned()),
        },
        _ => return no(format!("verdict {words:?}")),
    })
}

/// The key of a set element in the kernel's layout, by the set's key type.
fn key_bytes(key_type: &str, text: &str) -> Result<Vec<u8>, Unencodable> {
    let addr = |t: &str, v6: bool| -> Result<Vec<u8>, Unencodable> {
        match t.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if !v6 => Ok(a.octets().to_vec()),
            Ok(IpAddr::V6(a)) if v6 => Ok(a.octets().to_vec()),
            _ => no(format!("address {t}")),
        }
    };
    match key_type {
        "ipv4_addr" => addr(text, false),
        "ipv6_addr" => addr(text, true),
        "ipv4_addr . inet_proto . inet_service" | "ipv6_addr . inet_proto . inet_service" => {
            let parts: Vec<&str> = text.split(" . ").collect();
            let [a, proto, port] = parts.as_slice() else {
                return no(format!("element {text}"));
            };
            let mut out = addr(a, key_type.starts_with("ipv6"))?;
            let proto: u8 = proto.parse().map_err(|_| Unencodable(text.to_owned()))?;
            let port: u16 = port.parse().map_err(|_| Unencodable(text.to_owned()))?;
            // Each part of a concatenation takes whole 32-bit registers.
            out.extend([proto, 0, 0, 0]);
            out.extend(port.to_be_bytes());
            out.extend([0, 0]);
            Ok(out)
        }
        "ifname" => ifname_bytes(text, false),
        // An interface index, as a number (a name would need resolving in the table's
        // namespace: nft does that, on the text path).
        crate::table::IFACE_INDEX => match text.parse::<u32>() {
            Ok(index) => Ok(index.to_ne_bytes().to_vec()),
            Err(_) => no(format!("interface index {text}")),
        },
        _ => no(format!("set key type {key_type}")),
    }
}

/// A lookup of register 1 in the verdict map `map` (`… vmap @map`).
fn verdict_lookup(map: &str) -> Expr {
    Expr::Lookup {
        set: map.to_owned(),
        sreg: NFT_REG_1,
        dreg: Some(NFT_REG_VERDICT),
        inv: false,
    }
}

/// The packet's mark into register 1, then `(mark & mask) ^ xor` there.
fn mark_bitwise(out: &mut Vec<Expr>, mask: u32, xor: u32) {
    out.push(Expr::Meta {
        key: NFT_META_MARK,
        dreg: NFT_REG_1,
    });
    out.push(Expr::Bitwise {
        len: 4,
        mask: mask.to_ne_bytes().to_vec(),
        xor: xor.to_ne_bytes().to_vec(),
    });
}

/// An interface name as nft compares it: quoted; `"x*"` matches the prefix `x`.
fn ifname_bytes(quoted: &str, wildcard: bool) -> Result<Vec<u8>, Unencodable> {
    let Some(name) = quoted.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return no(format!("interface name {quoted}"));
    };
    if name.contains(['\\', '"', '?', '[']) || name.is_empty() {
        return no(format!("interface name {quoted}"));
    }
    if let Some(prefix) = name.strip_suffix('*') {
        if !wildcard || prefix.is_empty() || prefix.contains('*') || prefix.len() >= IFNAMSIZ {
            return no(format!("interface name {quoted}"));
        }
        return Ok(prefix.as_bytes().to_vec());
    }
    if name.contains('*') || name.len() >= IFNAMSIZ {
        return no(format!("interface name {quoted}"));
    }
    let mut v = name.as_bytes().to_vec();
    v.resize(IFNAMSIZ, 0);
    Ok(v)
}

/// A set element: its key (absent for the catch-all `*`) and, in maps, its verdict.
fn element(
    set: &crate::table::Set,
    text: &str,
) -> Result<(Option<Vec<u8>>, Option<Verdict>), Unencodable> {
    if set.kind != SetKind::Verdict {
        return Ok((Some(key_bytes(&set.key, text)?), None));
    }
    let Some((key, v)) = text.split_once(" : ") else {
        return no(format!("map element {text}"));
    };
    let words: Vec<&str> = v.split(' ').collect();
    let v = verdict(&words)?;
    if key == "*" {
        return Ok((None, Some(v)));
    }
    Ok((Some(key_bytes(&set.key, key)?), Some(v)))
}

fn put_element(a: &mut Attrs<'_>, key: Option<&[u8]>, data: Option<&Verdict>, flags: u32) {
    a.nest(NFTA_LIST_ELEM, |a| {
        if let Some(k) = key {
            a.data(NFTA_SET_ELEM_KEY, k);
        }
        if let Some(v) = data {
            a.verdict(NFTA_SET_ELEM_DATA, v);
        }
        if flags != 0 {
            a.be32(NFTA_SET_ELEM_FLAGS, flags);
        }
    });
}

fn range_bytes(family: u8, v: u128) -> Vec<u8> {
    if family == 4 {
        (v as u32).to_be_bytes().to_vec()
    } else {
        v.to_be_bytes().to_vec()
    }
}

/// An interval set's elements as the kernel keeps them, as nft 1.0.6 sends them for a set
/// being filled: an interval end at zero (unless the first range starts there), then each
/// merged range as its start and, flagged, the address after its end.
fn interval_elements(set: &crate::table::Set) -> Result<Vec<(Vec<u8>, u32)>, Unencodable> {
    let family = match set.key.as_str() {
        "ipv4_addr" => 4,
        "ipv6_addr" => 6,
        k => return no(format!("interval set of {k}")),
    };
    let max = if family == 4 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let ranges = coverage(set.elements.iter().map(String::as_str))
        .ok_or_else(|| Unencodable("interval element".into()))?;
    let mut out = Vec::new();
    for (i, &(f, start, end)) in ranges.iter().enumerate() {
        if f != family {
            return no("interval element of the other family");
        }
        if end == max {
            return no("interval reaching the last address");
        }
        if i == 0 && start != 0 {
            out.push((range_bytes(family, 0), NFT_SET_ELEM_INTERVAL_END));
        }
        out.push((range_bytes(family, start), 0));
        out.push((range_bytes(family, end + 1), NFT_SET_ELEM_INTERVAL_END));
    }
    Ok(out)
}

/// Encodes a transaction's ops as one batch, or says why not. `desired` is the table the
/// transaction makes (the sets' types and interval sets' whole contents come from it).
pub fn encode(ops: &[Op], desired: &Table) -> Result<Batch, Unencodable> {
    let mut b = Batch::default();
    // About what a rule's message takes: the buffer grows once or twice, not per attribute.
    b.buf.reserve(ops.len() * 256);
    // Interval sets are rewritten whole, once, at their first op.
    let mut rewritten: BTreeSet<&str> = BTreeSet::new();
    let mut set_id = 0u32;
    for (op_index, op) in ops.iter().enumerate() {
        match op {
            // The incremental path runs on an installed table.
            Op::AddTable => {}
            Op::DeleteTable => return no("delete table"),
            Op::AddSet { name } => {
                let Some(set) = desired.sets.get(name) else {
                    return no(format!("set {name} is not in the desired table"));
                };
                let decl = declaration(set)?;
                set_id += 1;
                let id = set_id;
                b.message(
                    NFT_MSG_NEWSET,
                    NLM_F_CREATE,
                    format_args!("add set {name}"),
                    |a| {
                        a.str(NFTA_SET_TABLE, TABLE);
                        a.str(NFTA_SET_NAME, name);
                        a.be32(NFTA_SET_FLAGS, decl.flags);
                        a.be32(NFTA_SET_KEY_TYPE, decl.key_type);
                        a.be32(NFTA_SET_KEY_LEN, decl.key_len);
                        if decl.flags & NFT_SET_MAP != 0 {
                            a.be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
                            a.be32(NFTA_SET_DATA_LEN, 0);
                        }
                        a.be32(NFTA_SET_ID, id);
                        if let Some(size) = set.size {
                            a.nest(NFTA_SET_DESC, |a| a.be32(NFTA_SET_DESC_SIZE, size));
                        }
                        a.put(NFTA_SET_USERDATA, &decl.userdata);
                    },
                );
            }
            Op::AddChain { name, base } => {
                let hook = match base {
                    None => None,
                    Some(base) => {
                        let num = match base.hook.as_str() {
                            "prerouting" => 0u32,
                            "input" => 1,
                            "forward" => 2,
                            "output" => 3,
                            "postrouting" => 4,
                            h => return no(format!("hook {h}")),
                        };
                        let policy = match base.policy.as_str() {
                            "accept" => NF_ACCEPT,
                            "drop" => NF_DROP,
                            p => return no(format!("policy {p}")),
                        };
                        if !matches!(base.kind.as_str(), "filter" | "nat") {
                            return no(format!("chain type {}", base.kind));
                        }
                        Some((num, base.priority, policy, base.kind.clone()))
                    }
                };
                b.message(
                    NFT_MSG_NEWCHAIN,
                    NLM_F_CREATE,
                    format_args!("add chain {name}"),
                    |a| {
                        a.str(NFTA_CHAIN_TABLE, TABLE);
                        a.str(NFTA_CHAIN_NAME, name);
                        if let Some((num, priority, policy, kind)) = &hook {
                            a.nest(NFTA_CHAIN_HOOK, |a| {
                                a.be32(NFTA_HOOK_HOOKNUM, *num);
                                a.put(NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
                            });
                            a.put(NFTA_CHAIN_POLICY, &policy.to_be_bytes());
                            a.str(NFTA_CHAIN_TYPE, kind);
                        }
                    },
                );
            }
            Op::DeleteChain { name } => {
                b.message(
                    NFT_MSG_DELCHAIN,
                    0,
                    format_args!("delete chain {name}"),
                    |a| {
                        a.str(NFTA_CHAIN_TABLE, TABLE);
                        a.str(NFTA_CHAIN_NAME, name);
                    },
                );
            }
            // One message deletes a chain's rules: all of them, or the one with the handle.
            Op::FlushChain { name: chain } | Op::DeleteRule { chain, .. } => {
                let handle = match op {
                    Op::DeleteRule { handle, .. } => Some(*handle),
                    _ => None,
                };
                let attrs = |a: &mut Attrs<'_>| {
                    a.str(NFTA_RULE_TABLE, TABLE);
                    a.str(NFTA_RULE_CHAIN, chain);
                    if let Some(h) = handle {
                        a.be64(NFTA_RULE_HANDLE, h);
                    }
                };
                match handle {
                    Some(h) => b.message(
                        NFT_MSG_DELRULE,
                        0,
                        format_args!("delete rule {chain} handle {h}"),
                        attrs,
                    ),
                    None => b.message(
                        NFT_MSG_DELRULE,
                        0,
                        format_args!("flush chain {chain}"),
                        attrs,
                    ),
                }
            }
            Op::AddRule {
                chain,
                rule,
                position,
                ..
            } => {
                let (exprs, anons) = rule_expressions(&rule.text)?;
                let mut ids = Vec::new();
                for anon in &anons {
                    set_id += 1;
                    ids.push((set_id, anon.map));
                    anon.create(&mut b, set_id);
                }
                let comment = rule.comment();
                if comment.len() + 1 > 255 {
                    return no("long comment");
                }
                // Appended, or placed after (`add … position`) or before (`insert …
                // position`) an installed rule; echoed, so that its handle is known.
                let (flags, at) = match position {
                    None => (NLM_F_APPEND, None),
                    Some(Position::After(h)) => (NLM_F_APPEND, Some(*h)),
                    Some(Position::Before(h)) => (0, Some(*h)),
                };
                b.message(
                    NFT_MSG_NEWRULE,
                    NLM_F_CREATE | NLM_F_ECHO | flags,
                    format_args!("add rule {chain} {}", rule.text),
                    |a| {
                        a.str(NFTA_RULE_TABLE, TABLE);
                        a.str(NFTA_RULE_CHAIN, chain);
                        if let Some(h) = at {
                            a.be64(NFTA_RULE_POSITION, h);
                        }
                        a.nest(NFTA_RULE_EXPRESSIONS, |a| {
                            for e in &exprs {
                                e.put(a, &ids);
                            }
                        });
                        let mut udata = vec![UDATA_RULE_COMMENT, (comment.len() + 1) as u8];
                        udata.extend(comment.as_bytes());
                        udata.push(0);
                        a.put(NFTA_RULE_USERDATA, &udata);
                    },
                );
                b.rules.push((b.what_ends.len() as u32, op_index));
            }
            Op::DeleteSet { name } => {
                b.message(NFT_MSG_DELSET, 0, format_args!("delete set {name}"), |a| {
                    a.str(NFTA_SET_TABLE, TABLE);
                    a.str(NFTA_SET_NAME, name);
                });
            }
            Op::FlushSet { name: set }
            | Op::AddElements { set, .. }
            | Op::DeleteElements { set, .. } => {
                let Some(s) = desired.sets.get(set) else {
                    return no(format!("set {set} is not in the desired table"));
                };
                if s.kind == SetKind::Interval {
                    if !rewritten.insert(set) {
                        continue;
                    }
                    let elements = interval_elements(s)?;
                    flush_set(&mut b, set);
                    if !elements.is_empty() {
                        b.message(
                            NFT_MSG_NEWSETELEM,
                            NLM_F_CREATE,
                            format_args!("add elements to {set}"),
                            |a| {
                                set_list(a, set);
                                a.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |a| {
                                    for (k, flags) in &elements {
                                        put_element(a, Some(k), None, *flags);
                                    }
                                });
                            },
                        );
                    }
                    continue;
                }
                let (msg, flags, texts, verb) = match op {
                    Op::FlushSet { .. } => {
                        flush_set(&mut b, set);
                        continue;
                    }
                    Op::AddElements { elements, .. } => (
                        NFT_MSG_NEWSETELEM,
                        NLM_F_CREATE,
                        elements,
                        "add elements to",
                    ),
                    Op::DeleteElements { elements, .. } => {
                        (NFT_MSG_DELSETELEM, 0, elements, "delete elements from")
                    }
                    _ => unreachable!("matched above"),
                };
                let elements = texts
                    .iter()
                    .map(|t| element(s, t))
                    .collect::<Result<Vec<_>, _>>()?;
                b.message(msg, flags, format_args!("{verb} {set}"), |a| {
                    set_list(a, set);
                    a.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |a| {
                        for (k, v) in &elements {
                            // Deleting by key: the map's data is not part of it.
                            let data = if msg == NFT_MSG_DELSETELEM {
                                None
                            } else {
                                v.as_ref()
                            };
                            let flags = if k.is_none() {
                                NFT_SET_ELEM_CATCHALL
                            } else {
                                0
                            };
                            put_element(a, k.as_deref(), data, flags);
                        }
                    });
                });
            }
        }
    }
    Ok(b)
}

/// How nft 1.0.6 declares a set of the renderer's kinds.
struct Declaration {
    flags: u32,
    key_type: u32,
    key_len: u32,
    /// libnftnl's set user data: key (and data) byte order, auto-merge, as nft writes them.
    userdata: Vec<u8>,
}

fn declaration(set: &crate::table::Set) -> Result<Declaration, Unencodable> {
    // Byte order of the key: big-endian (2) for addresses, host (1) for interface names.
    const KEY_BIG_ENDIAN: [u8; 6] = [0, 4, 2, 0, 0, 0];
    const MERGE: [u8; 6] = [2, 4, 1, 0, 0, 0];
    // A concatenation: no single byte order, and the parts' types.
    const CONCAT: [u8; 16] = [0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 0x0d, 0, 0, 0, 1, 0];
    // An interface name key (host order), verdict data, no data intervals.
    const IFNAME_MAP: [u8; 18] = [0, 4, 1, 0, 0, 0, 1, 4, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0];
    let interval = set.kind == SetKind::Interval;
    let map = set.kind == SetKind::Verdict;
    let (key_type, key_len, mut userdata) = match (set.key.as_str(), map) {
        ("ipv4_addr", false) => (7, 4, KEY_BIG_ENDIAN.to_vec()),
        ("ipv6_addr", false) => (8, 16, KEY_BIG_ENDIAN.to_vec()),
        ("ipv4_addr . inet_proto . inet_service", false) if !interval => {
            (0x730d, 12, CONCAT.to_vec())
        }
        ("ipv6_addr . inet_proto . inet_service", false) if !interval => {
            (0x830d, 24, CONCAT.to_vec())
        }
        ("ifname", true) => (41, 16, IFNAME_MAP.to_vec()),
        // nft's user data for an interface index key is that of a name: host byte order.
        (crate::table::IFACE_INDEX, true) => (20, 4, IFNAME_MAP.to_vec()),
        (k, _) => return no(format!("a set of {k} ({:?})", set.kind)),
    };
    let mut flags = 0;
    if interval {
        flags |= NFT_SET_INTERVAL;
        userdata.extend(MERGE);
    }
    if map {
        flags |= NFT_SET_MAP;
    }
    Ok(Declaration {
        flags,
        key_type,
        key_len,
        userdata,
    })
}

fn set_list(a: &mut Attrs<'_>, set: &str) {
    a.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    a.str(NFTA_SET_ELEM_LIST_SET, set);
}

fn flush_set(b: &mut Batch, set: &str) {
    b.message(
        NFT_MSG_DELSETELEM,
        0,
        format_args!("flush set {set}"),
        |a| set_list(a, set),
    );
}

/// One nf_tables expression: its name and attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    Meta {
        key: u32,
        dreg: u32,
    },
    MetaSet {
        key: u32,
        sreg: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    /// Outside a range (nft matches inside one with two comparisons).
    Range {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Bitwise {
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        inv: bool,
    },
    /// A lookup in the rule's anonymous set or map number `n` (of its [`Anon`]s).
    AnonLookup {
        n: usize,
        dreg: Option<u32>,
        inv: bool,
    },
    Counter,
    Notrack,
    CtState,
    FibDaddrType,
    Log {
        group: Option<u16>,
        prefix: Option<String>,
    },
    Limit {
        rate: u64,
        unit: u64,
        burst: u32,
    },
    Immediate(Verdict),
}

impl Expr {
    /// Writes the expression; `anon` gives the batch ids of the rule's anonymous sets.
    fn put(&self, a: &mut Attrs<'_>, anon: &[(u32, bool)]) {
        let name = match self {
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Range { .. } => "range",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } | Expr::AnonLookup { .. } => "lookup",
            Expr::Counter => "counter",
            Expr::Notrack => "notrack",
            Expr::CtState => "ct",
            Expr::FibDaddrType => "fib",
            Expr::Log { .. } => "log",
            Expr::Limit { .. } => "limit",
            Expr::Immediate(_) => "immediate",
        };
        a.nest(NFTA_LIST_ELEM, |a| {
            a.str(NFTA_EXPR_NAME, name);
            a.nest(NFTA_EXPR_DATA, |a| match self {
                Expr::Meta { key, dreg } => {
                    a.be32(NFTA_META_KEY, *key);
                    a.be32(NFTA_META_DREG, *dreg);
                }
                Expr::MetaSet { key, sreg } => {
                    a.be32(NFTA_META_KEY, *key);
                    a.be32(NFTA_META_SREG, *sreg);
                }
                Expr::Payload {
                    base,
                    offset,
                    len,
                    dreg,
                } => {
                    a.be32(NFTA_PAYLOAD_DREG, *dreg);
                    a.be32(NFTA_PAYLOAD_BASE, *base);
                    a.be32(NFTA_PAYLOAD_OFFSET, *offset);
                    a.be32(NFTA_PAYLOAD_LEN, *len);
                }
                Expr::Cmp { op, data } => {
                    a.be32(NFTA_CMP_SREG, NFT_REG_1);
                    a.be32(NFTA_CMP_OP, *op);
                    a.data(NFTA_CMP_DATA, data);
                }
                Expr::Range { from, to } => {
                    a.be32(NFTA_RANGE_SREG, NFT_REG_1);
                    a.be32(NFTA_RANGE_OP, NFT_RANGE_NEQ);
                    a.data(NFTA_RANGE_FROM_DATA, from);
                    a.data(NFTA_RANGE_TO_DATA, to);
                }
                Expr::Bitwise { len, mask, xor } => {
                    a.be32(NFTA_BITWISE_SREG, NFT_REG_1);
                    a.be32(NFTA_BITWISE_DREG, NFT_REG_1);
                    a.be32(NFTA_BITWISE_LEN, *len);
                    a.data(NFTA_BITWISE_MASK, mask);
                    a.data(NFTA_BITWISE_XOR, xor);
                }
                Expr::Lookup {
                    set,
                    sreg,
                    dreg,
                    inv,
                } => {
                    a.be32(NFTA_LOOKUP_SREG, *sreg);
                    a.str(NFTA_LOOKUP_SET, set);
                    if let Some(d) = dreg {
                        a.be32(NFTA_LOOKUP_DREG, *d);
                    }
                    if *inv {
                        a.be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                    }
                }
                Expr::AnonLookup { n, dreg, inv } => {
                    let (id, map) = anon[*n];
                    a.be32(NFTA_LOOKUP_SREG, NFT_REG_1);
                    if let Some(d) = dreg {
                        a.be32(NFTA_LOOKUP_DREG, *d);
                    }
                    a.str(NFTA_LOOKUP_SET, anon_name(map));
                    a.be32(NFTA_LOOKUP_SET_ID, id);
                    if *inv {
                        a.be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                    }
                }
                Expr::Counter | Expr::Notrack => {}
                Expr::CtState => {
                    a.be32(NFTA_CT_KEY, NFT_CT_STATE);
                    a.be32(NFTA_CT_DREG, NFT_REG_1);
                }
                Expr::FibDaddrType => {
                    a.be32(NFTA_FIB_DREG, NFT_REG_1);
                    a.be32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
                    a.be32(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR);
                }
                Expr::Log { group, prefix } => {
                    if let Some(p) = prefix {
                        a.str(NFTA_LOG_PREFIX, p);
                    }
                    if let Some(g) = group {
                        a.put(NFTA_LOG_GROUP, &g.to_be_bytes());
                    }
                }
                Expr::Limit { rate, unit, burst } => {
                    a.be64(NFTA_LIMIT_RATE, *rate);
                    a.be64(NFTA_LIMIT_UNIT, *unit);
                    a.be32(NFTA_LIMIT_BURST, *burst);
                    a.be32(NFTA_LIMIT_TYPE, NFT_LIMIT_PKTS);
                    a.be32(NFTA_LIMIT_FLAGS, 0);
                }
                Expr::Immediate(v) => {
                    a.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                    a.verdict(NFTA_IMMEDIATE_DATA, v);
                }
            });
        });
    }
}

/// Whether a rule's text is one the encoder knows (else its transactions use libnftables).
pub fn rule_encodes(text: &str) -> Result<(), Unencodable> {
    rule_expressions(text).map(|_| ())
}

/// Splits a rule into words; a quoted string (with its quotes) is one word.
fn words(text: &str) -> Result<Vec<&str>, Unencodable> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let end = if let Some(quoted) = rest.strip_prefix('"') {
            match quoted.find('"') {
                Some(i) => i + 2,
                None => return no("unterminated string"),
            }
        } else {
            rest.find(' ').unwrap_or(rest.len())
        };
        out.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(w: Option<&&str>) -> Result<T, Unencodable> {
    w.and_then(|w| w.parse().ok())
        .ok_or_else(|| Unencodable(format!("number {w:?}")))
}

fn ct_state_bit(state: &str) -> Result<u32, Unencodable> {
    Ok(match state {
        "invalid" => 1,
        "established" => 2,
        "related" => 4,
        "new" => 8,
        "untracked" => 64,
        s => return no(format!("ct state {s}")),
    })
}

/// The elements of `{ a, b, … }` starting at word `j`, and the words it took.
fn braced(w: &[&str], j: usize) -> Result<(Vec<String>, usize), Unencodable> {
    if w.get(j) != Some(&"{") {
        return no("expected a set");
    }
    let Some(close) = w[j..].iter().position(|x| *x == "}") else {
        return no("unterminated set");
    };
    let inner = w[j + 1..j + close].join(" ");
    let items: Vec<String> = inner.split(',').map(|x| x.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        return no("empty set element");
    }
    Ok((items, close + 1))
}

fn anon_name(map: bool) -> &'static str {
    if map { "__map%d" } else { "__set%d" }
}

/// An anonymous set or map of a rule (`{ … }`), created in the rule's batch as nft 1.0.6
/// creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Anon {
    map: bool,
    flags: u32,
    key_type: u32,
    key_len: u32,
    userdata: Vec<u8>,
    /// Key, verdict (maps), element flags.
    elements: Vec<(Vec<u8>, Option<Verdict>, u32)>,
}

/// Set user data: the key's byte order is big-endian.
const UD_KEY_BIG_ENDIAN: [u8; 6] = [0, 4, 2, 0, 0, 0];
/// Set user data: auto-merge.
const UD_MERGE: [u8; 6] = [2, 4, 1, 0, 0, 0];

/// Set user data: the key is the payload field (`base`, `field` in nft's protocol tables).
fn ud_typeof(base: u8, field: u8) -> [u8; 22] {
    [
        3, 20, 0, 4, 7, 0, 0, 0, 1, 12, 0, 4, base, 0, 0, 0, 1, 4, field, 0, 0, 0,
    ]
}

fn key_of(v: u128, len: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    b[16 - len as usize..].to_vec()
}

impl Anon {
    /// Exact values (a port list without ranges).
    fn plain(
        key_type: u32,
        key_len: u32,
        of: (u8, u8),
        values: &[(u128, u128)],
    ) -> Result<Anon, Unencodable> {
        let distinct: BTreeSet<u128> = values.iter().map(|v| v.0).collect();
        if distinct.len() != values.len() {
            return no("repeated set element");
        }
        let mut userdata = UD_KEY_BIG_ENDIAN.to_vec();
        userdata.extend(ud_typeof(of.0, of.1));
        Ok(Anon {
            map: false,
            flags: NFT_SET_ANONYMOUS | NFT_SET_CONSTANT,
            key_type,
            key_len,
            userdata,
            elements: values
                .iter()
                .map(|(v, _)| (key_of(*v, key_len), None, 0))
                .collect(),
        })
    }

    /// Prefixes and ranges: an interval end at zero (unless the first range starts there),
    /// then each range's start and the value after its end. Ranges nft would merge (touching
    /// or overlapping) are not encoded.
    fn interval(
        key_type: u32,
        key_len: u32,
        of: (u8, u8),
        mut ranges: Vec<(u128, u128)>,
    ) -> Result<Anon, Unencodable> {
        ranges.sort();
        let max = if key_len == 16 {
            u128::MAX
        } else {
            (1u128 << (8 * key_len)) - 1
        };
        let mut elements = Vec::new();
        for (i, &(a, b)) in ranges.iter().enumerate() {
            if b == max {
                return no("range reaching the last value");
            }
            if let Some(&(_, prev)) = i.checked_sub(1).and_then(|p| ranges.get(p))
                && a <= prev + 1
            {
                return no("touching or overlapping set elements");
            }
            if i == 0 && a != 0 {
                elements.push((key_of(0, key_len), None, NFT_SET_ELEM_INTERVAL_END));
            }
            elements.push((key_of(a, key_len), None, 0));
            elements.push((key_of(b + 1, key_len), None, NFT_SET_ELEM_INTERVAL_END));
        }
        let mut userdata = UD_KEY_BIG_ENDIAN.to_vec();
        userdata.extend(UD_MERGE);
        userdata.extend(ud_typeof(of.0, of.1));
        Ok(Anon {
            map: false,
            flags: NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL,
            key_type,
            key_len,
            userdata,
            elements,
        })
    }

    /// `ct state vmap { state : verdict, … }`.
    fn ct_state_map(elements: Vec<(Vec<u8>, Verdict)>) -> Anon {
        // Key in host order, verdict data (with its type), no data intervals.
        const UD: [u8; 28] = [
            0, 4, 1, 0, 0, 0, 1, 4, 0, 0, 0, 0, 4, 8, 0, 4, 1, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
        ];
        Anon {
            map: true,
            flags: NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP,
            key_type: 26,
            key_len: 4,
            userdata: UD.to_vec(),
            elements: elements.into_iter().map(|(k, v)| (k, Some(v), 0)).collect(),
        }
    }

    /// Adds the set and its elements to the batch, as set `id` of the transaction.
    fn create(&self, b: &mut Batch, id: u32) {
        let name = anon_name(self.map);
        b.message(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            format_args!("add anonymous set"),
            |a| {
                a.str(NFTA_SET_TABLE, TABLE);
                a.str(NFTA_SET_NAME, name);
                a.be32(NFTA_SET_FLAGS, self.flags);
                a.be32(NFTA_SET_KEY_TYPE, self.key_type);
                a.be32(NFTA_SET_KEY_LEN, self.key_len);
                if self.map {
                    a.be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
                    a.be32(NFTA_SET_DATA_LEN, 0);
                }
                a.be32(NFTA_SET_ID, id);
                a.nest(NFTA_SET_DESC, |a| {
                    a.be32(NFTA_SET_DESC_SIZE, self.elements.len() as u32)
                });
                a.put(NFTA_SET_USERDATA, &self.userdata);
            },
        );
        b.message(
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            format_args!("add anonymous set elements"),
            |a| {
                a.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
                a.str(NFTA_SET_ELEM_LIST_SET, name);
                a.be32(NFTA_SET_ELEM_LIST_SET_ID, id);
                a.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |a| {
                    for (k, v, flags) in &self.elements {
                        put_element(a, Some(k), v.as_ref(), *flags);
                    }
                });
            },
        );
    }
}

/// A 32-bit value written `0x…` or in decimal.
fn hex32(w: Option<&&str>) -> Result<u32, Unencodable> {
    w.and_then(|w| match w.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => w.parse().ok(),
    })
    .ok_or_else(|| Unencodable(format!("mark {w:?}")))
}

/// One value of a match: `v`, or the only element of `{ v }`; the words it took.
fn single<'a>(w: &[&'a str], j: usize) -> Option<(&'a str, usize)> {
    match (w.get(j), w.get(j + 1), w.get(j + 2)) {
        (Some(&"{"), Some(v), Some(&"}")) => Some((v, 3)),
        (Some(v), _, _) if !v.starts_with(['{', '@']) => Some((v, 1)),
        _ => None,
    }
}

/// The matching of a loaded field against one prefix, as nft generates it: a byte-aligned
/// prefix loads only its bytes and compares them; any other loads the whole address, masks
/// it and compares.
fn prefix_match(
    out: &mut Vec<Expr>,
    text: &str,
    v6: bool,
    offset: u32,
    op: u32,
) -> Result<(), Unencodable> {
    let net: ipnet::IpNet = text
        .parse()
        .map_err(|_| Unencodable(format!("network {text}")))?;
    let (bytes, mask, len) = match net {
        ipnet::IpNet::V4(n) if !v6 => (
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
            n.prefix_len(),
        ),
        ipnet::IpNet::V6(n) if v6 => (
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
            n.prefix_len(),
        ),
        _ => return no(format!("network {text} of the other family")),
    };
    if len == 0 {
        return no("a zero-length prefix");
    }
    if len % 8 == 0 {
        let n = usize::from(len / 8);
        out.push(Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len: n as u32,
            dreg: NFT_REG_1,
        });
        out.push(Expr::Cmp {
            op,
            data: bytes[..n].to_vec(),
        });
        return Ok(());
    }
    out.push(Expr::Payload {
        base: NFT_PAYLOAD_NETWORK_HEADER,
        offset,
        len: bytes.len() as u32,
        dreg: NFT_REG_1,
    });
    out.push(Expr::Bitwise {
        len: bytes.len() as u32,
        xor: vec![0; mask.len()],
        mask,
    });
    out.push(Expr::Cmp { op, data: bytes });
    Ok(())
}

/// The expressions nft 1.0.6 generates for a rule of the renderer's grammar, in the same
/// order and layout (so that the kernel holds the same rule either way), or why not.
fn rule_expressions(text: &str) -> Result<(Vec<Expr>, Vec<Anon>), Unencodable> {
    let w = words(text)?;
    let mut out = Vec::new();
    let mut anons: Vec<Anon> = Vec::new();
    // What the rule has already established: nft adds no dependency when the rule states it.
    let mut nfproto: Option<&str> = None;
    let mut l4proto = false;
    // The last statement was an equality on a payload field: nft would merge a following one
    // into a single wider comparison, which this encoder does not do.
    let mut payload_eq: Option<u32> = None;
    let mut i = 0;
    let at = |i: usize| w.get(i).copied();
    while i < w.len() {
        let was_payload_eq = payload_eq.take();
        match (at(i), at(i + 1)) {
            (Some("meta"), Some("nfproto")) => {
                let v = match at(i + 2) {
                    Some("ipv4") => 2u8,
                    Some("ipv6") => 10,
                    other => return no(format!("nfproto {other:?}")),
                };
                if nfproto.is_some() {
                    return no("second nfproto");
                }
                nfproto = at(i + 2);
                out.push(Expr::Meta {
                    key: NFT_META_NFPROTO,
                    dreg: NFT_REG_1,
                });
                out.push(Expr::Cmp {
                    op: NFT_CMP_EQ,
                    data: vec![v],
                });
                i += 3;
            }
            (Some("meta"), Some("l4proto")) => {
                let (op, j) = if at(i + 2) == Some("!=") {
                    (NFT_CMP_NEQ, i + 3)
                } else {
                    (NFT_CMP_EQ, i + 2)
                };
                let p: u8 = number(w.get(j))?;
                if op == NFT_CMP_EQ {
                    l4proto = true;
                }
                out.push(Expr::Meta {
                    key: NFT_META_L4PROTO,
                    dreg: NFT_REG_1,
                });
                out.push(Expr::Cmp { op, data: vec![p] });
                i = j + 1;
            }
            (Some("meta"), Some("mark")) => match (at(i + 2), at(i + 4)) {
                (Some("&"), Some(rel @ ("==" | "!="))) => {
                    let mask = hex32(w.get(i + 3))?;
                    let value = hex32(w.get(i + 5))?;
                    mark_bitwise(&mut out, mask, 0);
                    out.push(Expr::Cmp {
                        op: if rel == "==" { NFT_CMP_EQ } else { NFT_CMP_NEQ },
                        data: value.to_ne_bytes().to_vec(),
                    });
                    i += 6;
                }
                (Some("set"), _) if at(i + 3) == Some("meta") && at(i + 4) == Some("mark") => {
                    let v = hex32(w.get(i + 6))?;
                    let (mask, xor) = match at(i + 5) {
                        Some("|") => (!v, v),
                        Some("&") => (v, 0),
                        other => return no(format!("mark operation {other:?}")),
                    };
                    mark_bitwise(&mut out, mask, xor);
                    out.push(Expr::MetaSet {
                        key: NFT_META_MARK,
                        sreg: NFT_REG_1,
                    });
                    i += 7;
                }
                _ => return no("meta mark form"),
            },
            (Some(ip @ ("ip" | "ip6")), Some(dir @ ("saddr" | "daddr"))) => {
                let v6 = ip == "ip6";
                if nfproto != Some(if v6 { "ipv6" } else { "ipv4" }) {
                    return no("address without its family");
                }
                let (len, offset) = match (v6, dir) {
                    (false, "saddr") => (4, 12),
                    (false, _) => (4, 16),
                    (true, "saddr") => (16, 8),
                    (true, _) => (16, 24),
                };
                let mut j = i + 2;
                let inv = at(j) == Some("!=");
                if at(j) != Some(".")
                    && let Some((net, n)) = single(&w, j + usize::from(inv))
                {
                    let op = if inv { NFT_CMP_NEQ } else { NFT_CMP_EQ };
                    if !inv && was_payload_eq == Some(NFT_PAYLOAD_NETWORK_HEADER) {
                        return no("adjacent payload comparisons");
                    }
                    prefix_match(&mut out, net, v6, offset, op)?;
                    if !inv {
                        payload_eq = Some(NFT_PAYLOAD_NETWORK_HEADER);
                    }
                    i = j + usize::from(inv) + n;
                    continue;
                }
                out.push(Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset,
                    len,
                    dreg: NFT_REG_1,
                });
                if at(j) == Some(".") {
                    // addr . meta l4proto . th Xport: one 32-bit register per part after the
                    // address.
                    let port = match (at(j + 1), at(j + 2), at(j + 3), at(j + 4), at(j + 5)) {
                        (Some("meta"), Some("l4proto"), Some("."), Some("th"), Some(p)) => p,
                        _ => return no("concatenation"),
                    };
                    let port_offset = match port {
                        "sport" => 0,
                        "dport" => 2,
                        _ => return no("concatenation port"),
                    };
                    let next = NFT_REG32_00 + len / 4;
                    out.push(Expr::Meta {
                        key: NFT_META_L4PROTO,
                        dreg: next,
                    });
                    out.push(Expr::Payload {
                        base: NFT_PAYLOAD_TRANSPORT_HEADER,
                        offset: port_offset,
                        len: 2,
                        dreg: next + 1,
                    });
                    j += 6;
                }
                let inv = at(j) == Some("!=");
                if inv {
                    j += 1;
                }
                if at(j) == Some("{") {
                    if len != 4 && len != 16 {
                        return no("concatenated anonymous set");
                    }
                    let (items, n) = braced(&w, j)?;
                    let mut ranges = Vec::new();
                    for item in items {
                        let net: ipnet::IpNet = item
                            .parse()
                            .map_err(|_| Unencodable(format!("network {item}")))?;
                        let (f, a, b) = crate::table::net_range(&net);
                        if (f == 6) != v6 {
                            return no("network of the other family");
                        }
                        ranges.push((a, b));
                    }
                    let (key_type, base, field) = match (v6, dir) {
                        (false, "saddr") => (7, 0x0c, 0x0b),
                        (false, _) => (7, 0x0c, 0x0c),
                        (true, "saddr") => (8, 0x0d, 8),
                        (true, _) => (8, 0x0d, 9),
                    };
                    anons.push(Anon::interval(key_type, len, (base, field), ranges)?);
                    out.push(Expr::AnonLookup {
                        n: anons.len() - 1,
                        dreg: None,
                        inv,
                    });
                    i = j + n;
                    continue;
                }
                let Some(set) = at(j).and_then(|s| s.strip_prefix('@')) else {
                    return no("address match other than a set lookup");
                };
                out.push(Expr::Lookup {
                    set: set.to_owned(),
                    sreg: NFT_REG_1,
                    dreg: None,
                    inv,
                });
                i = j + 1;
            }
            (Some("th"), Some(dir @ ("sport" | "dport"))) => {
                if !l4proto {
                    return no("port without a protocol");
                }
                let mut j = i + 2;
                let op = if at(j) == Some("!=") {
                    j += 1;
                    NFT_CMP_NEQ
                } else {
                    NFT_CMP_EQ
                };
                // A single port or range: nft turns `{ p }` into a comparison.
                let Some((value, n)) = single(&w, j) else {
                    let (items, n) = braced(&w, j)?;
                    let mut ranges = Vec::new();
                    for item in items {
                        let (a, b) = item.split_once('-').unwrap_or((&item, &item));
                        let a: u16 = number(Some(&a))?;
                        let b: u16 = number(Some(&b))?;
                        if a > b {
                            return no("port range");
                        }
                        ranges.push((u128::from(a), u128::from(b)));
                    }
                    let field = if dir == "sport" { 1 } else { 2 };
                    anons.push(if ranges.iter().all(|(a, b)| a == b) {
                        Anon::plain(13, 2, (0x0b, field), &ranges)?
                    } else {
                        Anon::interval(13, 2, (0x0b, field), ranges)?
                    });
                    out.push(Expr::Payload {
                        base: NFT_PAYLOAD_TRANSPORT_HEADER,
                        offset: if dir == "sport" { 0 } else { 2 },
                        len: 2,
                        dreg: NFT_REG_1,
                    });
                    out.push(Expr::AnonLookup {
                        n: anons.len() - 1,
                        dreg: None,
                        inv: op == NFT_CMP_NEQ,
                    });
                    i = j + n;
                    continue;
                };
                let load = Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: if dir == "sport" { 0 } else { 2 },
                    len: 2,
                    dreg: NFT_REG_1,
                };
                match value.split_once('-') {
                    None => {
                        let port: u16 = number(Some(&value))?;
                        if op == NFT_CMP_EQ && was_payload_eq == Some(NFT_PAYLOAD_TRANSPORT_HEADER)
                        {
                            return no("adjacent payload comparisons");
                        }
                        out.push(load);
                        out.push(Expr::Cmp {
                            op,
                            data: port.to_be_bytes().to_vec(),
                        });
                        if op == NFT_CMP_EQ {
                            payload_eq = Some(NFT_PAYLOAD_TRANSPORT_HEADER);
                        }
                    }
                    Some((a, b)) => {
                        let a: u16 = number(Some(&a))?;
                        let b: u16 = number(Some(&b))?;
                        if a >= b {
                            return no("port range");
                        }
                        out.push(load);
                        if op == NFT_CMP_EQ {
                            // A range: two comparisons.
                            out.push(Expr::Cmp {
                                op: NFT_CMP_GTE,
                                data: a.to_be_bytes().to_vec(),
                            });
                            out.push(Expr::Cmp {
                                op: NFT_CMP_LTE,
                                data: b.to_be_bytes().to_vec(),
                            });
                        } else {
                            out.push(Expr::Range {
                                from: a.to_be_bytes().to_vec(),
                                to: b.to_be_bytes().to_vec(),
                            });
                        }
                    }
                }
                i = j + n;
            }
            (Some(name @ ("iif" | "oif")), Some("vmap")) => {
                // An interface index map (`iif vmap @m`); nft has no other form of ours.
                let Some(map) = at(i + 2).and_then(|s| s.strip_prefix('@')) else {
                    return no("anonymous vmap");
                };
                out.push(Expr::Meta {
                    key: if name == "iif" {
                        NFT_META_IIF
                    } else {
                        NFT_META_OIF
                    },
                    dreg: NFT_REG_1,
                });
                out.push(verdict_lookup(map));
                i += 3;
            }
            (Some(name @ ("iifname" | "oifname")), next) => {
                let key = if name == "iifname" {
                    NFT_META_IIFNAME
                } else {
                    NFT_META_OIFNAME
                };
                out.push(Expr::Meta {
                    key,
                    dreg: NFT_REG_1,
                });
                if next == Some("vmap") {
                    let Some(map) = at(i + 2).and_then(|s| s.strip_prefix('@')) else {
                        return no("anonymous vmap");
                    };
                    out.push(verdict_lookup(map));
                    i += 3;
                } else if next == Some("!=") {
                    let data = ifname_bytes(at(i + 2).unwrap_or(""), true)?;
                    out.push(Expr::Cmp {
                        op: NFT_CMP_NEQ,
                        data,
                    });
                    i += 3;
                } else {
                    let data = ifname_bytes(next.unwrap_or(""), true)?;
                    out.push(Expr::Cmp {
                        op: NFT_CMP_EQ,
                        data,
                    });
                    i += 2;
                }
            }
            (Some("counter"), _) => {
                out.push(Expr::Counter);
                i += 1;
            }
            (Some("notrack"), _) => {
                out.push(Expr::Notrack);
                i += 1;
            }
            (Some("ct"), Some("state")) if at(i + 2) == Some("vmap") => {
                let (items, n) = braced(&w, i + 3)?;
                let mut elements = Vec::new();
                for item in items {
                    let Some((state, v)) = item.split_once(" : ") else {
                        return no("ct state vmap element");
                    };
                    let words: Vec<&str> = v.split(' ').collect();
                    elements.push((
                        ct_state_bit(state)?.to_ne_bytes().to_vec(),
                        verdict(&words)?,
                    ));
                }
                anons.push(Anon::ct_state_map(elements));
                out.push(Expr::CtState);
                out.push(Expr::AnonLookup {
                    n: anons.len() - 1,
                    dreg: Some(NFT_REG_VERDICT),
                    inv: false,
                });
                i += 3 + n;
            }
            (Some("ct"), Some("state")) => {
                // `ct state a,b`: any of the states (a mask, compared with zero).
                let mut mask = 0u32;
                for state in at(i + 2).unwrap_or("").split(',') {
                    mask |= ct_state_bit(state)?;
                }
                out.push(Expr::CtState);
                out.push(Expr::Bitwise {
                    len: 4,
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                out.push(Expr::Cmp {
                    op: NFT_CMP_NEQ,
                    data: vec![0; 4],
                });
                i += 3;
            }
            (Some("fib"), Some("daddr")) => {
                let (op, j) = match (at(i + 2), at(i + 3)) {
                    (Some("type"), Some("!=")) => (NFT_CMP_NEQ, i + 4),
                    (Some("type"), _) => (NFT_CMP_EQ, i + 3),
                    _ => return no("fib form"),
                };
                if at(j) != Some("local") {
                    return no("fib address type");
                }
                out.push(Expr::FibDaddrType);
                out.push(Expr::Cmp {
                    op,
                    data: RTN_LOCAL.to_ne_bytes().to_vec(),
                });
                i = j + 1;
            }
            (Some("limit"), Some("rate")) => {
                let Some((rate, unit)) = at(i + 2).and_then(|r| r.split_once('/')) else {
                    return no("limit rate");
                };
                let unit = match unit {
                    "second" => 1,
                    "minute" => 60,
                    "hour" => 3600,
                    _ => return no("limit unit"),
                };
                let rate: u64 = number(Some(&rate))?;
                if at(i + 3) != Some("burst") || at(i + 5) != Some("packets") {
                    return no("limit form");
                }
                let burst: u32 = number(w.get(i + 4))?;
                out.push(Expr::Limit { rate, unit, burst });
                i += 6;
            }
            (Some("log"), _) => {
                let mut j = i + 1;
                let (mut group, mut prefix) = (None, None);
                loop {
                    match at(j) {
                        Some("group") => {
                            group = Some(number::<u16>(w.get(j + 1))?);
                            j += 2;
                        }
                        Some("prefix") => {
                            let p = at(j + 1)
                                .and_then(|p| p.strip_prefix('"'))
                                .and_then(|p| p.strip_suffix('"'))
                                .ok_or_else(|| Unencodable("log prefix".into()))?;
                            if p.contains(['\\', '$']) || p.len() > 127 {
                                return no("log prefix characters");
                            }
                            prefix = Some(p.to_owned());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if group.is_none() && prefix.is_none() {
                    return no("bare log");
                }
                out.push(Expr::Log { group, prefix });
                i = j;
            }
            (Some(v @ ("accept" | "drop" | "return")), _) => {
                out.push(Expr::Immediate(verdict(&[v])?));
                i += 1;
            }
            (Some(v @ ("jump" | "goto")), Some(chain)) => {
                out.push(Expr::Immediate(verdict(&[v, chain])?));
                i += 2;
            }
            (w0, _) => return no(format!("statement {w0:?}")),
        }
        if matches!(out.last(), Some(Expr::Immediate(_))) && i < w.len() {
            return no("statement after the verdict");
        }
    }
    Ok((out, anons))
}

/// A `NETLINK_NETFILTER` socket in the namespace it was opened in.
pub struct Socket {
    socket: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nl::Socket")
    }
}

/// Batches larger than this go through libnftables (a socket's send buffer is finite).
pub const MAX_BATCH: usize = 128 * 1024;
/// Batches up to this size ask the kernel to echo the rules they add (about as many bytes
/// again, within a netlink socket's default receive buffer of 208 KiB).
const ECHO_MAX: usize = 64 * 1024;

impl Socket {
    /// Opens a socket in the calling thread's namespace, or in the named one.
    pub fn open(netns: Option<&str>) -> Result<Socket, NlError> {
        let open = || -> std::io::Result<netlink_sys::Socket> {
            let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
            s.bind_auto()?;
            // Errors carry only the refused message's header, not the whole message (which
            // can be larger than the receive buffer).
            s.set_cap_ack(true)?;
            Ok(s)
        };
        let socket = match netns {
            None => open()?,
            Some(name) => {
                let ns = gingham_net::NetnsRef::named(name);
                gingham_net::in_netns_same_thread(&ns, open)
                    .map_err(|e| NlError::Io(std::io::Error::other(e.to_string())))??
            }
        };
        Ok(Socket {
            socket,
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// Sends the batch as one transaction and reads the kernel's answers: `Ok` when the
    /// kernel acknowledged it and reported no error, with the handles of the rules it added
    /// (the index of each one's op, and its handle; a rule whose echo was not read is left
    /// out).
    pub fn commit(&mut self, batch: &Batch) -> Result<Vec<(usize, u64)>, NlError> {
        let mut added = Vec::new();
        if batch.is_empty() {
            return Ok(added);
        }
        let bytes = batch.framed();
        let last = batch.len() as u32;
        self.socket.send(&bytes, 0)?;
        // nfnetlink handles the batch inside the send: every answer is queued by now.
        let mut acked = false;
        let mut refused: Option<NlError> = None;
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(NlError::Io(e)),
            }
            let mut at = 0;
            while at + 16 <= self.buf.len() {
                let m = &self.buf[at..];
                let len = u32::from_ne_bytes(m[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([m[4], m[5]]);
                let seq = u32::from_ne_bytes(m[8..12].try_into().expect("4 bytes"));
                if len < 16 || at + len > self.buf.len() {
                    break;
                }
                if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE
                    && let Ok(i) = batch.rules.binary_search_by_key(&seq, |(s, _)| *s)
                    && let Some(handle) = rule_handle(&m[..len])
                {
                    added.push((batch.rules[i].1, handle));
                } else if kind == NLMSG_ERROR && len >= 20 {
                    let err = i32::from_ne_bytes(m[16..20].try_into().expect("4 bytes"));
                    if err == 0 && seq == last {
                        acked = true;
                    } else if err != 0 && refused.is_none() {
                        let what = match seq {
                            0 => "the transaction".to_owned(),
                            s => batch
                                .describe(s as usize)
                                .map(str::to_owned)
                                .unwrap_or_else(|| format!("message {s}")),
                        };
                        refused = Some(NlError::Refused {
                            what,
                            source: std::io::Error::from_raw_os_error(-err),
                        });
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
        match refused {
            Some(e) => Err(e),
            None if acked => Ok(added),
            None => Err(NlError::NoAck),
        }
    }
}

/// The handle in an echoed `NEWRULE` message (header, nfgenmsg, then attributes).
fn rule_handle(message: &[u8]) -> Option<u64> {
    let mut at = 20;
    while at + 4 <= message.len() {
        let len = u16::from_ne_bytes([message[at], message[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([message[at + 2], message[at + 3]]) & !NLA_F_NESTED;
        if len < 4 || at + len > message.len() {
            return None;
        }
        if kind == NFTA_RULE_HANDLE && len == 12 {
            return Some(u64::from_be_bytes(
                message[at + 4..at + 12].try_into().expect("8 bytes"),
            ));
        }
        at += len.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_is_described_for_the_kernels_errors() {
        let rule = crate::table::Rule::new("counter accept", "n");
        let ops = [
            Op::AddChain {
                name: "x".into(),
                base: None,
            },
            Op::AddRule {
                chain: "x".into(),
                rule,
                index: 0,
                position: None,
            },
            Op::FlushChain { name: "y".into() },
        ];
        let b = encode(&ops, &Table::default()).unwrap();
        assert_eq!(b.len(), 3);
        let said: Vec<Option<&str>> = (0..=4).map(|s| b.describe(s)).collect();
        assert_eq!(
            said,
            [
                None,
                Some("add chain x"),
                Some("add rule x counter accept"),
                Some("flush chain y"),
                None
            ]
        );
    }

    #[test]
    fn words_keep_quoted_strings_whole() {
        assert_eq!(
            words(r#"oifname "cali*" log prefix "a b: " drop"#).unwrap(),
            vec!["oifname", "\"cali*\"", "log", "prefix", "\"a b: \"", "drop"]
        );
    }

    #[test]
    fn a_policy_rule_encodes_as_nft_does() {
        let (e, anons) = rule_expressions(
            "meta nfproto ipv4 meta l4proto 6 ip saddr @s4 th dport { 80 } counter \
             meta mark set meta mark | 0x00010000 return",
        )
        .unwrap();
        assert!(anons.is_empty());
        assert_eq!(e.len(), 13);
        assert_eq!(
            e[7],
            Expr::Cmp {
                op: NFT_CMP_EQ,
                data: vec![0, 80]
            }
        );
        assert_eq!(
            e[10],
            Expr::Bitwise {
                len: 4,
                mask: (!0x0001_0000u32).to_ne_bytes().to_vec(),
                xor: 0x0001_0000u32.to_ne_bytes().to_vec()
            }
        );
    }

    #[test]
    fn unknown_grammar_is_refused() {
        for text in [
            "ct state vmap { established : accept, bogus : drop }",
            "meta nfproto ipv4 ip saddr { 10.0.0.0/8, 10.0.0.0/16 } drop",
            "meta nfproto ipv4 meta l4proto 6 th dport { 80, 81-90 } drop",
            "meta nfproto ipv4 meta l4proto 6 th dport 80 th sport 90 drop",
            "meta nfproto ipv4 ip saddr 10.0.0.0/8 ip daddr 10.1.0.0/16 drop",
            "ip saddr @s drop",
            "udp dport 4789 notrack",
            "counter masquerade",
            "drop accept",
        ] {
            assert!(rule_expressions(text).is_err(), "{text}");
        }
    }
}
