//! The table as data: what the renderer wants, what the kernel has, and the smallest `nft`
//! transaction from one to the other.
//!
//! Every rule carries a comment that starts with a hash of its text, so the kernel's copy of a
//! chain can be compared with the desired one without parsing nft's expressions back. Sets are
//! compared element by element (interval sets by the addresses they cover, since the kernel
//! merges adjacent intervals).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::render::TABLE;

/// Interval sets losing more members than this are rewritten (flush + add) rather than having
/// elements deleted; nft 1.0.6 deletes interval elements very slowly. Plain sets are always
/// edited element by element unless most of the set goes.
const FLUSH_PLAIN_ABOVE: usize = 512;
/// Elements per `add element` command.
const CHUNK: usize = 2000;

pub(crate) fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    hex::encode(&d[..6])
}

/// One rule: its nft text (without comment) and a note for people reading the ruleset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub text: String,
    pub note: String,
    id: String,
}

impl Rule {
    pub fn new(text: impl Into<String>, note: impl Into<String>) -> Rule {
        let text = text.into();
        let mut note: String = note.into().replace('"', "'");
        // Comments are at most 128 bytes: 12 for the id, a space, the note.
        while note.len() > 110 {
            note.pop();
        }
        let id = short_hash(&format!("{text}\u{0}{note}"));
        Rule { text, note, id }
    }

    /// The hash that identifies this rule in the kernel (the first word of its comment).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The comment nft stores with the rule (its id, then the note).
    pub fn comment(&self) -> String {
        if self.note.is_empty() {
            self.id.clone()
        } else {
            format!("{} {}", self.id, self.note)
        }
    }

    fn line(&self) -> String {
        if self.note.is_empty() {
            format!("{} comment \"{}\"", self.text, self.id)
        } else {
            format!("{} comment \"{} {}\"", self.text, self.id, self.note)
        }
    }
}

/// A base chain's hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// `filter`.
    pub kind: String,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: String,
    pub priority: i32,
    /// `accept` or `drop`.
    pub policy: String,
}

#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub base: Option<Base>,
    pub rules: Vec<Rule>,
    /// Only in a record read from the kernel: its rules differ from the desired ones.
    stale: bool,
    /// Only in a record of what is installed: the kernel's handle of each rule, in order, when
    /// every one is known (read from the kernel, or echoed by it for the rules a netlink batch
    /// added); empty otherwise. With them a change of some rules is made by deleting and
    /// inserting those rules (`Table::diff`), without rewriting the chain. Not compared.
    handles: Vec<u64>,
}

impl PartialEq for Chain {
    fn eq(&self, other: &Chain) -> bool {
        self.base == other.base && self.rules == other.rules && self.stale == other.stale
    }
}

impl Eq for Chain {}

impl Chain {
    pub fn regular(rules: Vec<Rule>) -> Chain {
        Chain {
            base: None,
            rules,
            stale: false,
            handles: Vec::new(),
        }
    }

    pub fn base(base: Base, rules: Vec<Rule>) -> Chain {
        Chain {
            base: Some(base),
            rules,
            stale: false,
            handles: Vec::new(),
        }
    }

    /// The kernel's handles of the rules, in order, when all are known (see `handles`).
    pub fn handles(&self) -> &[u64] {
        &self.handles
    }

    /// How this installed chain becomes `new` by editing its rules in place: the rules both
    /// begin with and end with (counts), when its handles are known and they share some.
    fn edit_to(&self, new: &Chain) -> Option<(usize, usize)> {
        if self.stale || self.rules.is_empty() || self.handles.len() != self.rules.len() {
            return None;
        }
        let (old, new) = (&self.rules, &new.rules);
        let prefix = old
            .iter()
            .zip(new)
            .take_while(|(a, b)| a.id == b.id)
            .count();
        let room = old.len().min(new.len()) - prefix;
        let suffix = old
            .iter()
            .rev()
            .zip(new.iter().rev())
            .take(room)
            .take_while(|(a, b)| a.id == b.id)
            .count();
        (prefix + suffix > 0).then_some((prefix, suffix))
    }

    /// Whether this installed chain already holds `other`'s rules (and is not a stale record
    /// read from the kernel).
    fn holds_rules_of(&self, other: &Chain) -> bool {
        !self.stale
            && self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.id == b.id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// Exact members (addresses, or address . protocol . port).
    Plain,
    /// Prefixes and ranges (`flags interval; auto-merge`).
    Interval,
    /// A verdict map keyed by the key type.
    Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// The key type, e.g. `ipv4_addr` or `ipv4_addr . inet_proto . inet_service` or `ifname`.
    pub key: String,
    pub kind: SetKind,
    /// Elements in nft syntax: `10.0.0.1`, `10.0.0.0/24`, `10.0.0.1 . 6 . 80`,
    /// `"cali1" : jump e…`.
    pub elements: BTreeSet<String>,
    /// The most elements the set may hold, declared (`size N;`): with it the kernel keeps the
    /// set in a fixed-size hash (for 32-bit keys its fast variant) instead of a resizable one,
    /// a cheaper lookup; an element beyond it is refused. `None`: no bound.
    pub size: Option<u32>,
    stale: bool,
}

impl Set {
    pub fn new(key: impl Into<String>, kind: SetKind, elements: BTreeSet<String>) -> Set {
        Set {
            key: key.into(),
            kind,
            elements,
            size: None,
            stale: false,
        }
    }

    /// The set, declared with room for at most `size` elements.
    pub fn with_size(mut self, size: u32) -> Set {
        self.size = Some(size);
        self
    }

    fn keyword(&self) -> &'static str {
        if self.kind == SetKind::Verdict {
            "map"
        } else {
            "set"
        }
    }

    fn declaration(&self) -> String {
        let size = self.size.map(|n| format!(" size {n};")).unwrap_or_default();
        match self.kind {
            SetKind::Plain => format!("type {};{size}", self.key),
            SetKind::Interval => format!("type {};{size} flags interval; auto-merge;", self.key),
            SetKind::Verdict => format!("type {} : verdict;{size}", self.key),
        }
    }
}

/// The whole table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
    /// The interface indexes (by name) the [`IFACE_INDEX`] maps' keys were written with: nft
    /// lists the key of an interface that exists by its name, and reading the kernel back
    /// turns those names into these indexes. Not part of any transaction.
    pub links: BTreeMap<String, u32>,
}

/// The elements one set gained and lost since it was last installed, net: with it, the diff
/// and the programmer's record follow the change instead of comparing or copying the whole
/// set (whose size grows with the cluster, not with the update).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    pub added: BTreeSet<String>,
    pub removed: BTreeSet<String>,
}

impl Edit {
    /// `element` entered the set (it was not in it).
    pub fn add(&mut self, element: &str) {
        if !self.removed.remove(element) {
            self.added.insert(element.to_owned());
        }
    }

    /// `element` left the set (it was in it).
    pub fn remove(&mut self, element: &str) {
        if !self.added.remove(element) {
            self.removed.insert(element.to_owned());
        }
    }
}

/// Per set name, its [`Edit`].
pub type Edits = BTreeMap<String, Edit>;

/// One command of a transaction, as data: the text path prints it as nft syntax, the netlink
/// path ([`crate::nl`]) encodes it as nf_tables messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    AddTable,
    DeleteTable,
    AddSet {
        name: String,
    },
    AddChain {
        name: String,
        base: Option<Base>,
    },
    FlushSet {
        name: String,
    },
    AddElements {
        set: String,
        elements: Vec<String>,
    },
    DeleteElements {
        set: String,
        elements: Vec<String>,
    },
    FlushChain {
        name: String,
    },
    /// A rule added to `chain`, where it is the `index`th of the desired chain: at the end,
    /// or next to an installed rule.
    AddRule {
        chain: String,
        rule: Rule,
        index: usize,
        position: Option<Position>,
    },
    /// An installed rule deleted by its handle.
    DeleteRule {
        chain: String,
        handle: u64,
    },
    DeleteSet {
        name: String,
    },
    DeleteChain {
        name: String,
    },
}

/// Where a rule goes relative to an installed rule (its handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    Before(u64),
    After(u64),
}

/// An nft transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    /// Commands in it (0: nothing to do).
    pub commands: usize,
    /// The same commands as data, in order.
    pub ops: Vec<Op>,
    /// For each chain whose rules the transaction writes, the handles its rules will have:
    /// those it keeps, and `None` where it adds one (the kernel says which, see
    /// [`Table::record_handles`]).
    pub handles: BTreeMap<String, Vec<Option<u64>>>,
}

impl Script {
    fn push(&mut self, line: std::fmt::Arguments<'_>, op: Op) {
        let _ = self.text.write_fmt(line);
        self.text.push('\n');
        self.commands += 1;
        self.ops.push(op);
    }

    fn append(&mut self, other: Script) {
        self.text.push_str(&other.text);
        self.commands += other.commands;
        self.ops.extend(other.ops);
        self.handles.extend(other.handles);
    }

    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }
}

fn add_elements(s: &mut Script, name: &str, elements: &[&String]) {
    for chunk in elements.chunks(CHUNK) {
        let list: Vec<&str> = chunk.iter().map(|e| e.as_str()).collect();
        s.push(
            format_args!("add element inet {TABLE} {name} {{ {} }}", list.join(", ")),
            Op::AddElements {
                set: name.to_owned(),
                elements: list.iter().map(|e| (*e).to_owned()).collect(),
            },
        );
    }
}

/// Makes the named entries of `to` what they are in `from` (absent if absent).
fn copy_named<T: Clone>(
    to: &mut BTreeMap<String, T>,
    from: &BTreeMap<String, T>,
    names: &BTreeSet<&str>,
) {
    for &name in names {
        match from.get(name) {
            Some(v) => {
                to.insert(name.to_owned(), v.clone());
            }
            None => {
                to.remove(name);
            }
        }
    }
}

fn base_spec(b: &Base) -> String {
    format!(
        "{{ type {} hook {} priority {}; policy {}; }}",
        b.kind, b.hook, b.priority, b.policy
    )
}

impl Table {
    /// A script that replaces whatever table of ours exists with this one, atomically.
    pub fn replace_script(&self) -> Script {
        let mut s = Script::default();
        s.push(format_args!("add table inet {TABLE}"), Op::AddTable);
        s.push(format_args!("delete table inet {TABLE}"), Op::DeleteTable);
        let rest = Table::default()
            .diff(self)
            .expect("an empty table diffs into anything");
        s.append(rest);
        s
    }

    /// The commands that turn `self` (what is installed) into `new`, in an order nft accepts
    /// within one transaction: declare, fill, rewrite, then remove what nothing references.
    /// `None` when a set's type or a base chain's hook changed: replace the table instead.
    pub fn diff(&self, new: &Table) -> Option<Script> {
        let chains: BTreeSet<&str> = self
            .chains
            .keys()
            .chain(new.chains.keys())
            .map(String::as_str)
            .collect();
        let sets: BTreeSet<&str> = self
            .sets
            .keys()
            .chain(new.sets.keys())
            .map(String::as_str)
            .collect();
        self.diff_only(new, &chains, &sets)
    }

    /// [`Table::diff`] for the named chains and sets only (the rest is known to be equal).
    pub fn diff_only(
        &self,
        new: &Table,
        chains: &BTreeSet<&str>,
        sets: &BTreeSet<&str>,
    ) -> Option<Script> {
        self.diff_edited(new, chains, sets, &Edits::new())
    }

    /// [`Table::diff_only`] where the sets named in `edits` changed by those elements only:
    /// they are not compared whole (an element of an edit counts only where it really differs).
    pub fn diff_edited(
        &self,
        new: &Table,
        chains: &BTreeSet<&str>,
        sets: &BTreeSet<&str>,
        edits: &Edits,
    ) -> Option<Script> {
        let mut s = Script::default();
        for &name in sets {
            let Some(set) = new.sets.get(name) else {
                continue;
            };
            match self.sets.get(name) {
                None => s.push(
                    format_args!(
                        "add {} inet {TABLE} {name} {{ {} }}",
                        set.keyword(),
                        set.declaration()
                    ),
                    Op::AddSet {
                        name: name.to_owned(),
                    },
                ),
                Some(old) if old.key != set.key || old.kind != set.kind => return None,
                Some(_) => {}
            }
        }
        for &name in chains {
            let Some(chain) = new.chains.get(name) else {
                continue;
            };
            match self.chains.get(name) {
                None => {
                    let op = Op::AddChain {
                        name: name.to_owned(),
                        base: chain.base.clone(),
                    };
                    match &chain.base {
                        None => s.push(format_args!("add chain inet {TABLE} {name}"), op),
                        Some(b) => s.push(
                            format_args!("add chain inet {TABLE} {name} {}", base_spec(b)),
                            op,
                        ),
                    }
                }
                Some(old) if old.base != chain.base => return None,
                Some(_) => {}
            }
        }
        for &name in sets {
            let Some(set) = new.sets.get(name) else {
                continue;
            };
            let all = || set.elements.iter().collect::<Vec<&String>>();
            match self.sets.get(name) {
                None => add_elements(&mut s, name, &all()),
                Some(old) => {
                    let (removed, added): (Vec<&String>, Vec<&String>) =
                        match edits.get(name).filter(|_| !old.stale) {
                            Some(e) => (
                                e.removed
                                    .iter()
                                    .filter(|x| old.elements.contains(*x))
                                    .filter(|x| !set.elements.contains(*x))
                                    .collect(),
                                e.added
                                    .iter()
                                    .filter(|x| set.elements.contains(*x))
                                    .filter(|x| !old.elements.contains(*x))
                                    .collect(),
                            ),
                            None => (
                                old.elements.difference(&set.elements).collect(),
                                set.elements.difference(&old.elements).collect(),
                            ),
                        };
                    let rewrite = old.stale
                        || (!removed.is_empty() && set.kind == SetKind::Interval)
                        || (removed.len() > FLUSH_PLAIN_ABOVE
                            && removed.len() > set.elements.len());
                    if rewrite {
                        s.push(
                            format_args!("flush {} inet {TABLE} {name}", set.keyword()),
                            Op::FlushSet {
                                name: name.to_owned(),
                            },
                        );
                        add_elements(&mut s, name, &all());
                    } else {
                        for chunk in removed.chunks(CHUNK) {
                            let list: Vec<&str> = chunk.iter().map(|e| e.as_str()).collect();
                            s.push(
                                format_args!(
                                    "delete element inet {TABLE} {name} {{ {} }}",
                                    list.join(", ")
                                ),
                                Op::DeleteElements {
                                    set: name.to_owned(),
                                    elements: list.iter().map(|e| (*e).to_owned()).collect(),
                                },
                            );
                        }
                        add_elements(&mut s, name, &added);
                    }
                }
            }
        }
        for &name in chains {
            let Some(chain) = new.chains.get(name) else {
                continue;
            };
            let old = self.chains.get(name);
            if old.is_some_and(|old| old.holds_rules_of(chain)) {
                continue;
            }
            let add = |s: &mut Script, index: usize, position: Option<Position>| {
                let rule = &chain.rules[index];
                let op = Op::AddRule {
                    chain: name.to_owned(),
                    rule: rule.clone(),
                    index,
                    position,
                };
                match position {
                    None => s.push(
                        format_args!("add rule inet {TABLE} {name} {}", rule.line()),
                        op,
                    ),
                    Some(Position::After(h)) => s.push(
                        format_args!("add rule inet {TABLE} {name} position {h} {}", rule.line()),
                        op,
                    ),
                    Some(Position::Before(h)) => s.push(
                        format_args!(
                            "insert rule inet {TABLE} {name} position {h} {}",
                            rule.line()
                        ),
                        op,
                    ),
                }
            };
            let mut plan: Vec<Option<u64>> = vec![None; chain.rules.len()];
            match old.and_then(|old| Some((old, old.edit_to(chain)?))) {
                // Some rules kept at either end: only the ones between change, in place.
                Some((old, (prefix, suffix))) => {
                    let (o, n) = (old.rules.len(), chain.rules.len());
                    plan[..prefix]
                        .iter_mut()
                        .zip(&old.handles)
                        .for_each(|(p, h)| *p = Some(*h));
                    plan[n - suffix..]
                        .iter_mut()
                        .zip(&old.handles[o - suffix..])
                        .for_each(|(p, h)| *p = Some(*h));
                    for &handle in &old.handles[prefix..o - suffix] {
                        s.push(
                            format_args!("delete rule inet {TABLE} {name} handle {handle}"),
                            Op::DeleteRule {
                                chain: name.to_owned(),
                                handle,
                            },
                        );
                    }
                    if suffix > 0 {
                        // Each inserted before the first kept rule of the end: in order.
                        let before = Position::Before(old.handles[o - suffix]);
                        (prefix..n - suffix).for_each(|i| add(&mut s, i, Some(before)));
                    } else {
                        // Each added after the last kept rule of the beginning: last first.
                        let after = Position::After(old.handles[prefix - 1]);
                        (prefix..n - suffix)
                            .rev()
                            .for_each(|i| add(&mut s, i, Some(after)));
                    }
                }
                None => {
                    if old.is_some() {
                        s.push(
                            format_args!("flush chain inet {TABLE} {name}"),
                            Op::FlushChain {
                                name: name.to_owned(),
                            },
                        );
                    }
                    (0..chain.rules.len()).for_each(|i| add(&mut s, i, None));
                }
            }
            s.handles.insert(name.to_owned(), plan);
        }
        let gone: Vec<&str> = chains
            .iter()
            .copied()
            .filter(|n| self.chains.contains_key(*n) && !new.chains.contains_key(*n))
            .collect();
        for name in &gone {
            s.push(
                format_args!("flush chain inet {TABLE} {name}"),
                Op::FlushChain {
                    name: (*name).to_owned(),
                },
            );
        }
        // Removed maps go before removed chains: their elements may name those chains.
        for &name in sets {
            if let (Some(set), None) = (self.sets.get(name), new.sets.get(name)) {
                s.push(
                    format_args!("delete {} inet {TABLE} {name}", set.keyword()),
                    Op::DeleteSet {
                        name: name.to_owned(),
                    },
                );
            }
        }
        for name in &gone {
            s.push(
                format_args!("delete chain inet {TABLE} {name}"),
                Op::DeleteChain {
                    name: (*name).to_owned(),
                },
            );
        }
        if !s.is_empty() {
            let mut with_table = Script::default();
            with_table.push(format_args!("add table inet {TABLE}"), Op::AddTable);
            with_table.append(s);
            return Some(with_table);
        }
        Some(s)
    }

    /// Takes the handles `read` (the installed table this table was diffed from) knows of the
    /// chains that already held their rules (the ones the diff left alone).
    pub fn keep_handles(&mut self, read: &Table) {
        for (name, chain) in &mut self.chains {
            if let Some(old) = read.chains.get(name)
                && old.holds_rules_of(chain)
            {
                chain.handles.clone_from(&old.handles);
            }
        }
    }

    /// Records the handles of the rules a script wrote, after it ran: `plans` (the script's
    /// `handles`: the ones it kept), and those the kernel gave the rules it added (`added`: the
    /// index of the `AddRule` op in `ops` and the rule's handle). A chain some of whose
    /// handles are not known keeps none (its next change rewrites it).
    pub fn record_handles(
        &mut self,
        ops: &[Op],
        mut plans: BTreeMap<String, Vec<Option<u64>>>,
        added: &[(usize, u64)],
    ) {
        for &(op, handle) in added {
            if let Some(Op::AddRule { chain, index, .. }) = ops.get(op)
                && let Some(slot) = plans.get_mut(chain).and_then(|p| p.get_mut(*index))
            {
                *slot = Some(handle);
            }
        }
        for (name, plan) in plans {
            if let Some(chain) = self.chains.get_mut(&name) {
                chain.handles = match plan.into_iter().collect::<Option<Vec<u64>>>() {
                    Some(h) if h.len() == chain.rules.len() => h,
                    _ => Vec::new(),
                };
            }
        }
    }

    /// Makes the named chains and sets of `self` what they are in `new` (absent if absent).
    pub fn copy_from(&mut self, new: &Table, chains: &BTreeSet<&str>, sets: &BTreeSet<&str>) {
        self.copy_edited(new, chains, sets, &Edits::new());
    }

    /// [`Table::copy_from`], the sets named in `edits` edited by their elements rather than
    /// copied whole (the same result when the edits are what changed).
    pub fn copy_edited(
        &mut self,
        new: &Table,
        chains: &BTreeSet<&str>,
        sets: &BTreeSet<&str>,
        edits: &Edits,
    ) {
        for &name in chains {
            match (self.chains.get(name), new.chains.get(name)) {
                // Unchanged: the record keeps the handles it knows.
                (Some(old), Some(chain)) if old.holds_rules_of(chain) => {}
                (_, Some(chain)) => {
                    self.chains.insert(name.to_owned(), chain.clone());
                }
                (_, None) => {
                    self.chains.remove(name);
                }
            }
        }
        let whole: BTreeSet<&str> = sets
            .iter()
            .copied()
            .filter(|&name| {
                let (Some(e), Some(mine), Some(theirs)) =
                    (edits.get(name), self.sets.get_mut(name), new.sets.get(name))
                else {
                    return true;
                };
                if mine.stale || mine.key != theirs.key || mine.kind != theirs.kind {
                    return true;
                }
                for x in e.removed.iter().filter(|x| !theirs.elements.contains(*x)) {
                    mine.elements.remove(x);
                }
                for x in e.added.iter().filter(|x| theirs.elements.contains(*x)) {
                    mine.elements.insert(x.clone());
                }
                false
            })
            .collect();
        copy_named(&mut self.sets, &new.sets, &whole);
    }

    /// What is installed, as far as the kernel's listing (`nft -j list table`) shows, expressed
    /// relative to `desired`: what matches is taken from `desired`, what differs is marked
    /// stale (rewritten by the next diff), what is extra is kept so the diff removes it.
    /// `None` when the listing cannot be read or a set's type or a base chain's hook differs:
    /// the table must then be replaced.
    pub fn from_kernel(json: &str, desired: &Table) -> Option<Table> {
        let listing = Listing::parse(json)?;
        let mut table = Table::default();
        for (name, k) in listing.sets {
            match desired.sets.get(&name) {
                Some(d) => {
                    if d.key != k.key || d.kind != k.kind || d.size != k.size {
                        return None;
                    }
                    let same = match d.kind {
                        SetKind::Interval => {
                            coverage(d.elements.iter().map(String::as_str)).as_ref()
                                == Some(&k.ranges?)
                        }
                        _ if d.key == IFACE_INDEX => {
                            k.elements.as_ref().map(|e| by_index(e, &desired.links))
                                == Some(d.elements.clone())
                        }
                        _ => k.elements.as_ref() == Some(&d.elements),
                    };
                    let mut set = d.clone();
                    set.stale = !same;
                    table.sets.insert(name, set);
                }
                None => {
                    let mut set = Set::new(k.key, k.kind, BTreeSet::new());
                    set.size = k.size;
                    set.stale = true;
                    table.sets.insert(name, set);
                }
            }
        }
        for (name, k) in listing.chains {
            match desired.chains.get(&name) {
                Some(d) => {
                    if d.base != k.base {
                        return None;
                    }
                    let same = d.rules.len() == k.rule_ids.len()
                        && d.rules.iter().zip(&k.rule_ids).all(|(r, id)| r.id == *id);
                    let mut chain = d.clone();
                    chain.stale = !same;
                    if same && k.handles.len() == k.rule_ids.len() {
                        chain.handles = k.handles;
                    }
                    table.chains.insert(name, chain);
                }
                None => {
                    table.chains.insert(
                        name,
                        Chain {
                            base: k.base,
                            rules: Vec::new(),
                            stale: true,
                            handles: Vec::new(),
                        },
                    );
                }
            }
        }
        Some(table)
    }
}

/// The kernel's table, read from `nft -j list table`.
struct Listing {
    sets: BTreeMap<String, KernelSet>,
    chains: BTreeMap<String, KernelChain>,
    /// Per chain, the rules' expressions (counters zeroed) and comments, for [`canonical`].
    rules: BTreeMap<String, Vec<String>>,
}

struct KernelSet {
    key: String,
    kind: SetKind,
    size: Option<u32>,
    /// Elements in our syntax, when every one could be read (plain sets and maps).
    elements: Option<BTreeSet<String>>,
    /// Covered address ranges (interval sets).
    ranges: Option<Vec<(u8, u128, u128)>>,
}

struct KernelChain {
    base: Option<Base>,
    rule_ids: Vec<String>,
    /// The rules' handles, when every rule listed one.
    handles: Vec<u64>,
}

fn protocol_number(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    Some(match v.as_str()? {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        "udplite" => 136,
        other => return other.parse().ok(),
    })
}

/// A listed interface index map's elements with the keys nft printed as names (`"cali1" :
/// accept`) written as the indexes `links` gives those names (`7 : accept`).
fn by_index(elements: &BTreeSet<String>, links: &BTreeMap<String, u32>) -> BTreeSet<String> {
    elements
        .iter()
        .map(|e| {
            let named = e
                .strip_prefix('"')
                .and_then(|rest| rest.split_once("\" : "))
                .and_then(|(name, verdict)| Some((links.get(name)?, verdict)));
            match named {
                Some((index, verdict)) => format!("{index} : {verdict}"),
                None => e.clone(),
            }
        })
        .collect()
}

/// The key type of interface index maps: elements are written with the index as a number
/// (`7 : goto w…`); nft lists an index whose interface exists by its name, any other as the
/// number.
pub const IFACE_INDEX: &str = "iface_index";

/// One element as we write it, or `None` if it is not something we would write; `numeric`:
/// a map key that is a number is written bare (interface indexes).
fn element_text(v: &Value, numeric: bool) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => {
            if let Some(parts) = o.get("concat").and_then(Value::as_array) {
                let [addr, proto, port] = parts.as_slice() else {
                    return None;
                };
                return Some(format!(
                    "{} . {} . {}",
                    addr.as_str()?,
                    protocol_number(proto)?,
                    port.as_u64()?
                ));
            }
            None
        }
        Value::Array(pair) => {
            let [key, verdict] = pair.as_slice() else {
                return None;
            };
            let verdict = verdict.as_object()?;
            let (name, arg) = verdict.iter().next()?;
            let text = match arg.get("target").and_then(Value::as_str) {
                Some(target) => format!("{name} {target}"),
                None => name.clone(),
            };
            match key.as_str()? {
                // The catch-all element.
                "*" => Some(format!("* : {text}")),
                key if numeric && key.parse::<u32>().is_ok() => Some(format!("{key} : {text}")),
                key => Some(format!("\"{key}\" : {text}")),
            }
        }
        _ => None,
    }
}

fn addr_value(a: IpAddr) -> (u8, u128) {
    match a {
        IpAddr::V4(v) => (4, u128::from(u32::from(v))),
        IpAddr::V6(v) => (6, u128::from(v)),
    }
}

pub(crate) fn net_range(net: &IpNet) -> (u8, u128, u128) {
    let (fam, start) = addr_value(net.network());
    let (_, end) = addr_value(net.broadcast());
    (fam, start, end)
}

/// Sorted, merged ranges covered by interval elements written as we write them.
pub(crate) fn coverage<'a>(
    elements: impl Iterator<Item = &'a str>,
) -> Option<Vec<(u8, u128, u128)>> {
    let mut ranges = Vec::new();
    for e in elements {
        let net: IpNet = match e.parse() {
            Ok(n) => n,
            Err(_) => IpNet::from(e.parse::<IpAddr>().ok()?),
        };
        ranges.push(net_range(&net));
    }
    Some(merge(ranges))
}

fn merge(mut ranges: Vec<(u8, u128, u128)>) -> Vec<(u8, u128, u128)> {
    ranges.sort();
    let mut out: Vec<(u8, u128, u128)> = Vec::new();
    for r in ranges {
        if let Some(last) = out.last_mut()
            && last.0 == r.0
            && r.1 <= last.2.saturating_add(1)
        {
            last.2 = last.2.max(r.2);
            continue;
        }
        out.push(r);
    }
    out
}

fn kernel_ranges(elems: &[Value]) -> Option<Vec<(u8, u128, u128)>> {
    let mut ranges = Vec::new();
    for e in elems {
        match e {
            Value::String(s) => {
                let (f, a) = addr_value(s.parse().ok()?);
                ranges.push((f, a, a));
            }
            Value::Object(o) => {
                if let Some(p) = o.get("prefix") {
                    let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
                    let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
                    ranges.push(net_range(&IpNet::new(addr, len).ok()?));
                } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                    let [a, b] = r.as_slice() else { return None };
                    let (f, a) = addr_value(a.as_str()?.parse().ok()?);
                    let (_, b) = addr_value(b.as_str()?.parse().ok()?);
                    ranges.push((f, a, b));
                } else {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(merge(ranges))
}

fn zero_counters(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(c) = o.get_mut("counter")
                && c.is_object()
            {
                *c = Value::Null;
            }
            for x in o.values_mut() {
                zero_counters(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(zero_counters),
        _ => {}
    }
}

impl Listing {
    fn parse(json: &str) -> Option<Listing> {
        let root: Value = serde_json::from_str(json).ok()?;
        let items = root.get("nftables")?.as_array()?;
        let mut listing = Listing {
            sets: BTreeMap::new(),
            chains: BTreeMap::new(),
            rules: BTreeMap::new(),
        };
        for item in items {
            let Some((what, body)) = item.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let name = || body.get("name").and_then(Value::as_str).map(str::to_owned);
            match what.as_str() {
                "set" | "map" => {
                    let key = match body.get("type")? {
                        Value::String(s) => s.clone(),
                        Value::Array(parts) => parts
                            .iter()
                            .map(|p| p.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()?
                            .join(" . "),
                        _ => return None,
                    };
                    let interval = body
                        .get("flags")
                        .and_then(Value::as_array)
                        .is_some_and(|f| f.iter().any(|x| x == "interval"));
                    let kind = if what == "map" {
                        SetKind::Verdict
                    } else if interval {
                        SetKind::Interval
                    } else {
                        SetKind::Plain
                    };
                    let empty = Vec::new();
                    let elems = body.get("elem").and_then(Value::as_array).unwrap_or(&empty);
                    let (elements, ranges) = if kind == SetKind::Interval {
                        (None, kernel_ranges(elems))
                    } else {
                        let numeric = key == IFACE_INDEX;
                        (
                            elems.iter().map(|e| element_text(e, numeric)).collect(),
                            None,
                        )
                    };
                    let size = body
                        .get("size")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok());
                    listing.sets.insert(
                        name()?,
                        KernelSet {
                            key,
                            kind,
                            size,
                            elements,
                            ranges,
                        },
                    );
                }
                "chain" => {
                    let base = match body.get("hook").and_then(Value::as_str) {
                        Some(hook) => Some(Base {
                            kind: body.get("type")?.as_str()?.to_owned(),
                            hook: hook.to_owned(),
                            priority: i32::try_from(body.get("prio")?.as_i64()?).ok()?,
                            policy: body.get("policy")?.as_str()?.to_owned(),
                        }),
                        None => None,
                    };
                    listing.chains.insert(
                        name()?,
                        KernelChain {
                            base,
                            rule_ids: Vec::new(),
                            handles: Vec::new(),
                        },
                    );
                }
                "rule" => {
                    let chain = body.get("chain")?.as_str()?.to_owned();
                    let comment = body.get("comment").and_then(Value::as_str).unwrap_or("");
                    let id = comment.split(' ').next().unwrap_or("").to_owned();
                    let mut expr = body.get("expr").cloned().unwrap_or(Value::Null);
                    zero_counters(&mut expr);
                    listing
                        .rules
                        .entry(chain.clone())
                        .or_default()
                        .push(format!("{expr} # {comment}"));
                    let listed = listing.chains.get_mut(&chain)?;
                    listed.rule_ids.push(id);
                    if let Some(h) = body.get("handle").and_then(Value::as_u64) {
                        listed.handles.push(h);
                    }
                }
                _ => {}
            }
        }
        Some(listing)
    }
}

/// The kernel's table in a form that compares equal exactly when two tables would treat
/// packets the same: sets and chains by name, set members (interval sets as merged ranges),
/// rules in order with their expressions and comments, counters and handles left out.
/// `None` if the listing cannot be read.
pub fn canonical(json: &str) -> Option<String> {
    let listing = Listing::parse(json)?;
    let mut out = String::new();
    for (name, set) in &listing.sets {
        let _ = write!(out, "set {name} {} {:?}", set.key, set.kind);
        if let Some(size) = set.size {
            let _ = write!(out, " size {size}");
        }
        out.push('\n');
        if let Some(e) = &set.elements {
            for x in e {
                let _ = writeln!(out, "  {x}");
            }
        }
        if let Some(r) = &set.ranges {
            for (f, a, b) in r {
                let _ = writeln!(out, "  v{f} {a:x}-{b:x}");
            }
        }
    }
    for (name, chain) in &listing.chains {
        let _ = writeln!(out, "chain {name} {:?}", chain.base);
        for r in listing.rules.get(name).into_iter().flatten() {
            let _ = writeln!(out, "  {r}");
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kind: SetKind, elements: &[&str]) -> Set {
        Set::new(
            "ipv4_addr",
            kind,
            elements.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    fn table(sets: Vec<(&str, Set)>, chains: Vec<(&str, Vec<&str>)>) -> Table {
        Table {
            sets: sets.into_iter().map(|(n, s)| (n.to_owned(), s)).collect(),
            chains: chains
                .into_iter()
                .map(|(n, rules)| {
                    (
                        n.to_owned(),
                        Chain::regular(rules.into_iter().map(|r| Rule::new(r, "")).collect()),
                    )
                })
                .collect(),
            links: BTreeMap::new(),
        }
    }

    #[test]
    fn equal_tables_need_no_commands() {
        let t = table(
            vec![("h", set(SetKind::Plain, &["10.0.0.1"]))],
            vec![("c", vec!["ip saddr @h drop"])],
        );
        assert!(t.diff(&t).unwrap().is_empty());
    }

    #[test]
    fn a_new_member_is_one_add_element() {
        let a = table(vec![("h", set(SetKind::Plain, &["10.0.0.1"]))], vec![]);
        let b = table(
            vec![("h", set(SetKind::Plain, &["10.0.0.1", "10.0.0.2"]))],
            vec![],
        );
        let s = a.diff(&b).unwrap();
        assert_eq!(
            s.text,
            "add table inet gingham\nadd element inet gingham h { 10.0.0.2 }\n"
        );
        let back = b.diff(&a).unwrap();
        assert!(
            back.text
                .contains("delete element inet gingham h { 10.0.0.2 }")
        );
    }

    #[test]
    fn interval_sets_losing_members_are_rewritten() {
        let a = table(
            vec![("s", set(SetKind::Interval, &["10.0.0.0/24", "10.1.0.1/32"]))],
            vec![],
        );
        let b = table(
            vec![("s", set(SetKind::Interval, &["10.0.0.0/24"]))],
            vec![],
        );
        let s = a.diff(&b).unwrap();
        assert!(s.text.contains("flush set inet gingham s\n"), "{}", s.text);
        assert!(
            s.text
                .contains("add element inet gingham s { 10.0.0.0/24 }")
        );
        assert!(!s.text.contains("delete element"));
    }

    #[test]
    fn changed_chains_are_rewritten_and_removed_ones_go_last() {
        let a = table(
            vec![("old", set(SetKind::Plain, &[]))],
            vec![("c", vec!["jump d"]), ("d", vec!["ip saddr @old drop"])],
        );
        let b = table(vec![], vec![("c", vec!["drop"])]);
        let s = a.diff(&b).unwrap();
        let lines: Vec<&str> = s.text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "add table inet gingham",
                "flush chain inet gingham c",
                &format!(
                    "add rule inet gingham c drop comment \"{}\"",
                    b.chains["c"].rules[0].id
                ),
                "flush chain inet gingham d",
                "delete set inet gingham old",
                "delete chain inet gingham d",
            ]
        );
    }

    #[test]
    fn a_changed_set_type_or_hook_needs_a_replacement() {
        let a = table(vec![("s", set(SetKind::Plain, &[]))], vec![]);
        let b = table(vec![("s", set(SetKind::Interval, &[]))], vec![]);
        assert!(a.diff(&b).is_none());
    }

    #[test]
    fn interval_coverage_ignores_how_the_kernel_merged() {
        let ours = coverage(["10.0.0.1/32", "10.0.0.2/32", "10.1.0.0/16"].into_iter()).unwrap();
        let kernel: Value = serde_json::json!([
            {"range": ["10.0.0.1", "10.0.0.2"]},
            {"prefix": {"addr": "10.1.0.0", "len": 16}}
        ]);
        assert_eq!(kernel_ranges(kernel.as_array().unwrap()).unwrap(), ours);
    }

    #[test]
    fn a_kernel_listing_matching_the_desired_table_needs_nothing() {
        let desired = table(
            vec![
                ("h", set(SetKind::Plain, &["10.0.0.1"])),
                ("s", set(SetKind::Interval, &["10.0.0.1/32", "10.0.0.2/32"])),
            ],
            vec![("c", vec!["drop"])],
        );
        let id = desired.chains["c"].rules[0].id.clone();
        let json = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "gingham"}},
            {"set": {"name": "h", "type": "ipv4_addr", "elem": ["10.0.0.1"]}},
            {"set": {"name": "s", "type": "ipv4_addr", "flags": ["interval"],
                     "elem": [{"range": ["10.0.0.1", "10.0.0.2"]}]}},
            {"set": {"name": "extra", "type": "ipv4_addr"}},
            {"chain": {"name": "c"}},
            {"rule": {"chain": "c", "comment": id, "expr": [{"drop": null}]}},
        ]})
        .to_string();
        let installed = Table::from_kernel(&json, &desired).unwrap();
        let s = installed.diff(&desired).unwrap();
        assert_eq!(
            s.text,
            "add table inet gingham\ndelete set inet gingham extra\n"
        );
        // A rule changed behind our back: the chain is rewritten.
        let tampered = json.replace(&id, "something-else");
        let installed = Table::from_kernel(&tampered, &desired).unwrap();
        let s = installed.diff(&desired).unwrap();
        assert!(s.text.contains("flush chain inet gingham c"), "{}", s.text);
    }
}
