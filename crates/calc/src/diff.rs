//! The connectivity difference between two policy sets: for each probed protocol and port, the
//! pairs of endpoints that gain access and the pairs that lose it, each loss with the cause
//! `explain` gives in the after state. Both sides are decided as [`reach::matrix`] decides them
//! ([`reach::Grid`], the reference evaluator), so a difference is exactly what two `reach` runs
//! disagree on.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::eval::{Flow, FlowError, Verdict, protocol_name};
use crate::explain;
use crate::reach::{self, Decider, Grid};
use crate::snapshot::Snapshot;

/// A pair that may connect after the change and could not before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gained {
    pub from: String,
    pub to: String,
    /// None for protocols without ports (ICMP).
    pub port: Option<u16>,
    pub protocol: String,
}

/// A pair that could connect before the change and may not after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lost {
    pub from: String,
    pub to: String,
    pub port: Option<u16>,
    pub protocol: String,
    /// Why the flow is denied after the change, in `explain`'s words ([`explain::cause`]).
    pub cause: String,
}

/// The difference, in the stable JSON schema of `gingham diff -o json`: pairs in the order of
/// the probes, then by client and server name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub gained: Vec<Gained>,
    pub lost: Vec<Lost>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty()
    }
}

/// The difference between `before` and `after` for each (protocol, port) of `probes`, over
/// every endpoint either side has (an endpoint one side lacks has no access on that side).
pub fn diff(
    before: &Snapshot,
    after: &Snapshot,
    probes: &[(u8, Option<u16>)],
) -> Result<Diff, FlowError> {
    let before_grids = Decider::new(before, &reach::matrix_endpoints(before));
    let after_grids = Decider::new(after, &reach::matrix_endpoints(after));
    diff_by(
        before,
        after,
        probes,
        &|pr, port| Ok((before_grids.grid(pr, port)?, after_grids.grid(pr, port)?)),
        &|flow| after_grids.evaluator().verdict(flow),
    )
}

/// [`diff`] as it was before the [`Evaluator`](crate::eval::Evaluator): both sides' class
/// pairs decided with full traces ([`Grid::decide_traced`]). Kept as the benchmark's baseline.
#[doc(hidden)]
pub fn diff_traced(
    before: &Snapshot,
    after: &Snapshot,
    probes: &[(u8, Option<u16>)],
) -> Result<Diff, FlowError> {
    let (eps_before, eps_after) = (
        reach::matrix_endpoints(before),
        reach::matrix_endpoints(after),
    );
    diff_by(
        before,
        after,
        probes,
        &|pr, port| {
            Ok((
                Grid::decide_traced(before, &eps_before, pr, port)?,
                Grid::decide_traced(after, &eps_after, pr, port)?,
            ))
        },
        &|flow| after.verdict(flow),
    )
}

/// Both sides' grids for one protocol and port.
type Grids<'a> = dyn Fn(u8, Option<u16>) -> Result<(Grid, Grid), FlowError> + 'a;

fn diff_by(
    before: &Snapshot,
    after: &Snapshot,
    probes: &[(u8, Option<u16>)],
    grids: &Grids<'_>,
    verdict_after: &(dyn Fn(&Flow) -> Result<Verdict, FlowError> + Sync),
) -> Result<Diff, FlowError> {
    let eps_before = reach::matrix_endpoints(before);
    let eps_after = reach::matrix_endpoints(after);
    let all: Vec<&String> = eps_before
        .iter()
        .chain(&eps_after)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Each endpoint's position in either side's list (none: that side lacks it).
    let position = |eps: &[String]| -> Vec<Option<usize>> {
        let at: HashMap<&str, usize> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| (e.as_str(), i))
            .collect();
        all.iter().map(|e| at.get(e.as_str()).copied()).collect()
    };
    let (at_before, at_after) = (position(&eps_before), position(&eps_after));
    let mut out = Diff::default();
    let mut lost = Vec::new();
    for &(protocol, port) in probes {
        let (gb, ga) = grids(protocol, port)?;
        let sides = Sides::new(&gb, &ga, &at_before, &at_after);
        let name = protocol_name(protocol);
        for (f, from) in all.iter().enumerate() {
            if !sides.row_may_differ(f) {
                continue;
            }
            for (t, to) in all.iter().enumerate() {
                let (was, is) = sides.cell(f, t);
                if !was && is {
                    out.gained.push(Gained {
                        from: (*from).clone(),
                        to: (*to).clone(),
                        port,
                        protocol: name.clone(),
                    });
                } else if was && !is {
                    lost.push((*from, *to, protocol, port));
                }
            }
        }
    }
    // Each loss's cause is one verdict with its trace: spread over the cores.
    let causes = reach::in_parallel(&lost, |&(from, to, protocol, port)| {
        let flow = Flow::between_endpoints(from, to, protocol, port);
        Ok(match verdict_after(&flow) {
            Ok(v) => explain::cause(after, &v),
            // The flow cannot be evaluated there (an endpoint gone or without an address):
            // the error `explain` reports.
            Err(e) => e.to_string(),
        })
    })?;
    out.lost = lost
        .into_iter()
        .zip(causes)
        .map(|((from, to, protocol, port), cause)| Lost {
            from: from.clone(),
            to: to.clone(),
            port,
            protocol: protocol_name(protocol),
            cause,
        })
        .collect();
    Ok(out)
}

/// Both sides' cells over the union of endpoints, and which rows can hold a difference.
struct Sides<'a> {
    before: &'a Grid,
    after: &'a Grid,
    at_before: &'a [Option<usize>],
    at_after: &'a [Option<usize>],
    /// Each endpoint's pair of classes (before, after; none where a side lacks it), numbered.
    joint: Vec<usize>,
    /// Whether a member of each joint class disagrees on a cell with another endpoint.
    differs: Vec<bool>,
}

impl<'a> Sides<'a> {
    fn new(
        before: &'a Grid,
        after: &'a Grid,
        at_before: &'a [Option<usize>],
        at_after: &'a [Option<usize>],
    ) -> Sides<'a> {
        let mut numbered: HashMap<(Option<usize>, Option<usize>), usize> = HashMap::new();
        let mut first = Vec::new();
        let joint: Vec<usize> = (0..at_before.len())
            .map(|e| {
                let key = (
                    at_before[e].map(|i| before.class(i)),
                    at_after[e].map(|i| after.class(i)),
                );
                *numbered.entry(key).or_insert_with(|| {
                    first.push(e);
                    first.len() - 1
                })
            })
            .collect();
        let mut sides = Sides {
            before,
            after,
            at_before,
            at_after,
            joint,
            differs: Vec::new(),
        };
        // A cell between two endpoints depends on their joint classes only (a class's cell
        // with itself is the same for every two members), so one member of each speaks for
        // all: its cells with one member of every other joint class, and with a second
        // member of its own when there is one.
        let mut second = vec![None; first.len()];
        for (e, &j) in sides.joint.iter().enumerate() {
            if first[j] != e && second[j].is_none() {
                second[j] = Some(e);
            }
        }
        sides.differs = (0..first.len())
            .map(|j1| {
                (0..first.len()).any(|j2| {
                    let to = if j1 == j2 {
                        second[j2]
                    } else {
                        Some(first[j2])
                    };
                    to.is_some_and(|t| {
                        let (was, is) = sides.cell(first[j1], t);
                        was != is
                    })
                })
            })
            .collect();
        sides
    }

    /// Whether row `f` can hold a difference: its joint class disagrees somewhere, or its
    /// flow to itself does.
    fn row_may_differ(&self, f: usize) -> bool {
        let (was, is) = self.cell(f, f);
        self.differs[self.joint[f]] || was != is
    }

    /// The cell of endpoints `f` and `t` (positions in the union) before and after.
    fn cell(&self, f: usize, t: usize) -> (bool, bool) {
        let side = |g: &Grid, at: &[Option<usize>]| match (at[f], at[t]) {
            (Some(i), Some(j)) => g.allowed(i, j),
            _ => false,
        };
        (
            side(self.before, self.at_before),
            side(self.after, self.at_after),
        )
    }
}

/// The difference as a table: one line per pair, gained (`+`) then lost (`-`) with its cause.
pub fn render_table(d: &Diff) -> String {
    if d.is_empty() {
        return "no pair gains or loses access\n".into();
    }
    let what = |protocol: &str, port: Option<u16>| match port {
        Some(p) => format!("{protocol}/{p}"),
        None => protocol.to_owned(),
    };
    let mut rows: Vec<[String; 5]> = vec![[
        "CHANGE".into(),
        "PORT".into(),
        "FROM".into(),
        "TO".into(),
        "CAUSE".into(),
    ]];
    for g in &d.gained {
        rows.push([
            "+ gained".into(),
            what(&g.protocol, g.port),
            g.from.clone(),
            g.to.clone(),
            String::new(),
        ]);
    }
    for l in &d.lost {
        rows.push([
            "- lost".into(),
            what(&l.protocol, l.port),
            l.from.clone(),
            l.to.clone(),
            l.cause.clone(),
        ]);
    }
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, w) in widths.iter().enumerate() {
            line.push_str(&format!("{:<w$}  ", r[i]));
        }
        line.push_str(&r[4]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "{} gained, {} lost\n",
        d.gained.len(),
        d.lost.len()
    ));
    out
}
