//! Paging of the list calls (snapshots, models, a model's items,
//! containers): a page holds at most `limit` entries (0, or above
//! [`MAX_PAGE_ENTRIES`], means that cap) and about [`MAX_PAGE_BYTES`]
//! encoded bytes (always at least one entry), so that no response comes
//! near the transport's message limit however many entries there are. The
//! response's `next_cursor` continues after the page's last entry.

use std::collections::HashMap;

use fdr_proto::v1 as pb;
use prost::Message;
use tonic::Status;

pub use super::query::MAX_PAGE_BYTES;
use crate::{
    analysis::{model::Model, wire::model_to_pb},
    event::wire::timestamp,
};

/// Entries in one page at most; a `limit` of 0 or above means this.
pub const MAX_PAGE_ENTRIES: usize = 10_000;

/// A field's tag and length prefix in a message, at most (a repeated
/// field's entry under 2 GiB).
const ENTRY_OVERHEAD: usize = 8;

/// The page size a request asks for.
pub fn page_limit(asked: u32) -> usize {
    match asked as usize {
        0 => MAX_PAGE_ENTRIES,
        n => n.min(MAX_PAGE_ENTRIES),
    }
}

/// Keeps the leading entries of `items` whose encoded size fits in
/// `budget` bytes (at least one). Returns whether any were cut.
pub fn cut_by_bytes<T: Message>(items: &mut Vec<T>, budget: usize) -> bool {
    let mut bytes = 0;
    let mut keep = 0;
    for i in items.iter() {
        let size = i.encoded_len() + ENTRY_OVERHEAD;
        if keep > 0 && bytes + size > budget {
            break;
        }
        bytes += size;
        keep += 1;
    }
    let cut = keep < items.len();
    items.truncate(keep);
    cut
}

/// The `n` smallest of `items` by `key`, sorted: a selection, then a sort
/// of those only (linear in the number of items, not n log n of all).
pub fn smallest<T, K: Ord>(mut items: Vec<T>, n: usize, key: impl Fn(&T) -> K) -> Vec<T> {
    if n == 0 {
        return Vec::new();
    }
    if items.len() > n {
        items.select_nth_unstable_by(n - 1, |a, b| key(a).cmp(&key(b)));
        items.truncate(n);
    }
    items.sort_by_key(&key);
    items
}

/// A page of entries ordered by `key`: the first `limit` after `after`
/// (all when `None`), then cut to [`MAX_PAGE_BYTES`]. Returns the page
/// and the key of its last entry when more follow.
pub fn page<T, K: Ord, P: Message>(
    items: impl Iterator<Item = T>,
    after: Option<&K>,
    limit: usize,
    key: impl Fn(&T) -> K,
    to_pb: impl Fn(&T) -> P,
) -> (Vec<P>, Option<K>) {
    let candidates: Vec<T> = items
        .filter(|i| after.is_none_or(|a| key(i) > *a))
        .collect();
    let taken = smallest(candidates, limit.saturating_add(1), &key);
    let mut more = taken.len() > limit;
    let mut out: Vec<P> = taken.iter().take(limit).map(&to_pb).collect();
    more |= cut_by_bytes(&mut out, MAX_PAGE_BYTES);
    let next = more.then(|| key(&taken[out.len() - 1]));
    (out, next)
}

/// Separates a section's name from an item value in a model cursor (no
/// section name holds it; a value may, and comes last).
const CURSOR_SEP: char = '\n';

/// A page of a model's items: the model's fields, then its sections by
/// name, each with its items by value, from after `cursor` (empty: the
/// first page, with every section, empty ones too), at most `limit` items
/// and about [`MAX_PAGE_BYTES`] (at least one item). A section may go on
/// in the next page; `next_cursor` is set when items follow.
pub fn model_page(m: &Model, now_ns: u64, cursor: &str, limit: usize) -> Result<pb::Model, Status> {
    let after = if cursor.is_empty() {
        None
    } else {
        let (section, value) = cursor
            .split_once(CURSOR_SEP)
            .ok_or_else(|| Status::invalid_argument("bad model cursor"))?;
        Some((section, value))
    };
    let mut out = model_to_pb(m, now_ns, false);
    let mut bytes = out.encoded_len();
    let mut sections: Vec<(&'static str, &HashMap<String, u64>)> = m
        .sections
        .iter()
        .map(|(s, items)| (s.name(), items))
        .collect();
    sections.sort_by_key(|s| s.0);
    let mut left = limit.max(1);
    let mut last: Option<(&str, &str)> = None;
    for (name, items) in sections {
        let from = match after {
            Some((s, _)) if name < s => continue,
            Some((s, v)) if name == s => Some(v),
            _ => None,
        };
        if left == 0 || bytes >= MAX_PAGE_BYTES {
            // Full: more items follow (or an empty section, which the next
            // page shows).
            let (s, v) = last.unwrap_or((name, ""));
            out.next_cursor = format!("{s}{CURSOR_SEP}{v}");
            return Ok(out);
        }
        let candidates: Vec<(&String, &u64)> = items
            .iter()
            .filter(|(v, _)| from.is_none_or(|f| v.as_str() > f))
            .collect();
        let taken = smallest(candidates, left + 1, |(v, _)| *v);
        let mut section = pb::ModelSection {
            name: name.to_owned(),
            items: Vec::new(),
        };
        bytes += section.encoded_len() + ENTRY_OVERHEAD;
        let mut full = false;
        for (v, at) in taken.iter() {
            let item = pb::ModelItem {
                value: (*v).clone(),
                learned_at: Some(timestamp(**at)),
            };
            let size = item.encoded_len() + ENTRY_OVERHEAD;
            if left == 0 || (last.is_some() && bytes + size > MAX_PAGE_BYTES) {
                full = true;
                break;
            }
            bytes += size;
            left -= 1;
            section.items.push(item);
            last = Some((name, v.as_str()));
        }
        out.sections.push(section);
        if full {
            let (s, v) = last.unwrap_or((name, ""));
            out.next_cursor = format!("{s}{CURSOR_SEP}{v}");
            return Ok(out);
        }
    }
    Ok(out)
}

/// The cursor of a container list: running ones first, then by id.
pub fn container_key(running: bool, id: &str) -> String {
    format!("{}:{id}", if running { 'r' } else { 's' })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::analysis::model::Section;

    #[test]
    fn limits() {
        assert_eq!(page_limit(0), MAX_PAGE_ENTRIES);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(u32::MAX), MAX_PAGE_ENTRIES);
    }

    fn info(id: u64, reason_len: usize) -> pb::SnapshotInfo {
        pb::SnapshotInfo {
            id,
            reason: "r".repeat(reason_len),
            ..Default::default()
        }
    }

    #[test]
    fn cut_keeps_what_fits_and_at_least_one() {
        let mut v: Vec<_> = (1..=10).map(|i| info(i, 1000)).collect();
        let one = v[0].encoded_len() + ENTRY_OVERHEAD;
        assert!(cut_by_bytes(&mut v, one * 3 + one / 2));
        assert_eq!(v.len(), 3);
        let mut v = vec![info(1, 5000), info(2, 1)];
        assert!(cut_by_bytes(&mut v, 100));
        assert_eq!(v.len(), 1, "one always stays");
        let mut v: Vec<_> = (1..=3).map(|i| info(i, 10)).collect();
        assert!(!cut_by_bytes(&mut v, 1 << 20));
        assert_eq!(v.len(), 3);
        let mut empty: Vec<pb::SnapshotInfo> = Vec::new();
        assert!(!cut_by_bytes(&mut empty, 0));
    }

    #[test]
    fn smallest_is_sorted() {
        let v = vec![9, 3, 7, 1, 8, 2];
        assert_eq!(smallest(v.clone(), 3, |x| *x), vec![1, 2, 3]);
        assert_eq!(smallest(v.clone(), 10, |x| *x), vec![1, 2, 3, 7, 8, 9]);
        assert!(smallest(v, 0, |x| *x).is_empty());
    }

    /// Pages follow each other: every entry once, in order.
    #[test]
    fn pages_cover_everything_once() {
        let ids: Vec<u64> = (1..=95).rev().collect();
        let mut after = None;
        let mut seen = Vec::new();
        loop {
            let (p, next) = page(
                ids.iter().copied(),
                after.as_ref(),
                10,
                |i| *i,
                |i| info(*i, 1),
            );
            assert!(p.len() <= 10);
            seen.extend(p.iter().map(|i| i.id));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (1..=95).collect::<Vec<_>>());
    }

    /// Entries large enough that a page of them would pass the cap: the
    /// page is cut by bytes, below the cap, and the rest follows.
    #[test]
    fn pages_stay_under_the_byte_cap() {
        let ids: Vec<u64> = (1..=40).collect();
        let mut after = None;
        let mut seen = 0;
        let mut pages = 0;
        loop {
            let (p, next) = page(
                ids.iter().copied(),
                after.as_ref(),
                MAX_PAGE_ENTRIES,
                |i| *i,
                |i| info(*i, 400 * 1024),
            );
            let resp = pb::ListSnapshotsResponse {
                snapshots: p,
                next_cursor: next.map(|n| n.to_string()).unwrap_or_default(),
            };
            assert!(
                resp.encoded_len() <= MAX_PAGE_BYTES + 64,
                "{}",
                resp.encoded_len()
            );
            seen += resp.snapshots.len();
            pages += 1;
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, 40);
        assert!(pages >= 4, "{pages}");
    }

    fn model(items: usize, value_len: usize) -> Model {
        let mut sections = BTreeMap::new();
        for (s, n) in [
            (Section::Exec, items),
            (Section::File, 0),
            (Section::Listen, 3),
        ] {
            let map: HashMap<String, u64> = (0..n)
                .map(|i| (format!("{i:06}{}", "x".repeat(value_len)), i as u64))
                .collect();
            sections.insert(s, map);
        }
        Model::restored(Arc::from("image:test"), 1, 2, sections, 0)
    }

    /// Every item of every section exactly once over the pages, in order,
    /// each page under its limit and the byte cap.
    fn walk(m: &Model, limit: usize) -> (Vec<(String, String)>, Vec<String>, usize) {
        let mut cursor = String::new();
        let mut items = Vec::new();
        let mut names = Vec::new();
        let mut pages = 0;
        loop {
            let p = model_page(m, 0, &cursor, limit).unwrap();
            pages += 1;
            assert!(
                p.encoded_len() <= MAX_PAGE_BYTES + 64,
                "{}",
                p.encoded_len()
            );
            let n: usize = p.sections.iter().map(|s| s.items.len()).sum();
            assert!(n <= limit.max(1), "{n}");
            assert_eq!(p.item_count, m.item_count() as u64);
            for s in &p.sections {
                if names.last() != Some(&s.name) {
                    names.push(s.name.clone());
                }
                items.extend(s.items.iter().map(|i| (s.name.clone(), i.value.clone())));
            }
            if p.next_cursor.is_empty() {
                return (items, names, pages);
            }
            assert!(p.next_cursor > cursor || cursor.is_empty());
            cursor = p.next_cursor;
        }
    }

    #[test]
    fn model_pages_cover_every_item_once() {
        let m = model(25, 3);
        for limit in [1, 4, 25, 28, 1000] {
            let (items, names, pages) = walk(&m, limit);
            let mut want = Vec::new();
            for (s, n) in [("exec", 25), ("listen", 3)] {
                for i in 0..n {
                    want.push((s.to_owned(), format!("{i:06}xxx")));
                }
            }
            assert_eq!(items, want, "limit {limit}");
            assert_eq!(names, ["exec", "file", "listen"], "limit {limit}");
            assert!(pages >= 28usize.div_ceil(limit), "limit {limit}: {pages}");
        }
    }

    #[test]
    fn model_pages_stay_under_the_byte_cap() {
        // 30 000 items of 4 KiB: about 120 MiB.
        let m = model(30_000, 4096);
        let (items, _, pages) = walk(&m, MAX_PAGE_ENTRIES);
        assert_eq!(items.len(), 30_003);
        assert!(pages >= 30, "{pages}");
    }

    #[test]
    fn bad_model_cursor() {
        assert!(model_page(&model(1, 1), 0, "no separator", 10).is_err());
    }
}
