//! The usage journal: what makes a request's usage record survive the death of the process.
//!
//! The usage writer commits to the database in batches, tens of milliseconds after a request
//! ends; a process killed in that window would lose records whose clients already got their
//! whole answer. So a request's final usage record and its billing are first appended to a
//! local file, synchronously, before the client is handed the end of its response
//! (`relay::Finish::complete` runs before the last bytes go to the server). "Recorded" means
//! exactly that: the entry is in the journal file.
//!
//! * One line of JSON per entry, appended with a single `write` to a file opened for append.
//!   Written data is in the kernel's page cache once `write` returns, so it survives SIGKILL,
//!   an OOM kill or a panic; it does not survive a power cut or kernel crash (no `fsync` per
//!   request — that would cost milliseconds each).
//! * The file is cut into segments. The writer reports how many entries of each segment it
//!   committed; a segment whose entries have all committed is deleted (the current one is
//!   truncated instead), and the current one is rotated once it passes [`ROTATE_BYTES`].
//! * At start, the entries of segments a dead process left behind are handed back
//!   ([`Journal::open`]) for the writer to commit again. Replaying is safe: records upsert by
//!   id and billing applies once per record (the store's `billed` flag).
//! * One process per journal directory: a lock file held for the process's lifetime.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aether_domain::entities::UsageRecord;
use aether_store::Billing;
use serde::{Deserialize, Serialize};

/// Size past which the current segment is replaced by a new one.
pub const ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// One journaled request: its final record and what it costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub record: UsageRecord,
    pub bill: Option<Billing>,
}

#[derive(Serialize)]
struct EntryRef<'a> {
    record: &'a UsageRecord,
    bill: Option<&'a Billing>,
}

/// An entry read back at start, with the segment it came from.
#[derive(Debug)]
pub struct Recovered {
    pub entry: Entry,
    pub segment: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    appended: u64,
    committed: u64,
}

struct State {
    current: u64,
    file: File,
    bytes: u64,
    segments: BTreeMap<u64, Counts>,
    /// Segments that held unreadable lines: kept (renamed) rather than deleted.
    damaged: Vec<u64>,
}

/// The journal of one process.
pub struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
    _lock: File,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.log"))
}

fn segment_number(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    name.strip_suffix(".log")?.parse().ok()
}

impl Journal {
    /// Opens (creating) the journal in `dir`, takes its lock and reads back what an earlier
    /// process left: those entries must be committed again (see the module docs).
    pub fn open(dir: &Path) -> io::Result<(Self, Vec<Recovered>)> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::other(format!(
                    "the usage journal {} is in use by another aether process; give each \
                     instance its own data directory",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut found: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().and_then(|e| segment_number(&e.path())))
            .collect();
        found.sort_unstable();
        let mut recovered = Vec::new();
        let mut segments = BTreeMap::new();
        let mut damaged = Vec::new();
        for &n in &found {
            let (entries, bad) = read_segment(&segment_path(dir, n))?;
            if bad > 0 {
                tracing::error!(
                    segment = n,
                    unreadable_lines = bad,
                    "usage journal segment has unreadable lines; it is kept as .damaged once the rest has committed"
                );
                damaged.push(n);
            }
            segments.insert(
                n,
                Counts {
                    appended: entries.len() as u64,
                    committed: 0,
                },
            );
            recovered.extend(
                entries
                    .into_iter()
                    .map(|entry| Recovered { entry, segment: n }),
            );
        }
        if !recovered.is_empty() {
            tracing::warn!(
                entries = recovered.len(),
                "usage journal: replaying records an earlier process had not committed"
            );
        }
        let current = found.last().map_or(1, |n| n + 1);
        let file = open_segment(dir, current)?;
        segments.insert(current, Counts::default());
        let journal = Self {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                current,
                file,
                bytes: 0,
                segments,
                damaged,
            }),
            _lock: lock,
        };
        // Segments with nothing readable in them are done already.
        journal.committed(&HashMap::new());
        Ok((journal, recovered))
    }

    /// Appends one entry; returns the segment it is in (for [`Journal::committed`]).
    pub fn append(&self, record: &UsageRecord, bill: Option<&Billing>) -> io::Result<u64> {
        let mut line = serde_json::to_vec(&EntryRef { record, bill }).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.bytes >= ROTATE_BYTES {
            let next = st.current + 1;
            st.file = open_segment(&self.dir, next)?;
            st.current = next;
            st.bytes = 0;
            st.segments.insert(next, Counts::default());
        }
        st.file.write_all(&line)?;
        st.bytes += line.len() as u64;
        let current = st.current;
        st.segments.entry(current).or_default().appended += 1;
        Ok(current)
    }

    /// The writer committed `per_segment[n]` more entries of segment `n`: delete segments
    /// that are done, truncate the current one when all of it has committed.
    pub fn committed(&self, per_segment: &HashMap<u64, u64>) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (n, k) in per_segment {
            if let Some(c) = st.segments.get_mut(n) {
                c.committed += k;
            }
        }
        let done: Vec<u64> = st
            .segments
            .iter()
            .filter(|(_, c)| c.committed >= c.appended)
            .map(|(n, _)| *n)
            .collect();
        // Finished older segments leave the map now; their files are removed after the lock
        // is released, so appends never wait on file-system work other than their own write.
        let mut remove = Vec::new();
        for n in done {
            if n == st.current {
                if st.bytes > 0 {
                    if let Err(e) = st.file.set_len(0) {
                        tracing::warn!(error = %e, "usage journal: could not truncate the current segment");
                        continue;
                    }
                    st.bytes = 0;
                }
                st.segments.insert(n, Counts::default());
                continue;
            }
            st.segments.remove(&n);
            remove.push((n, st.damaged.contains(&n)));
        }
        drop(st);
        for (n, damaged) in remove {
            let path = segment_path(&self.dir, n);
            let r = if damaged {
                std::fs::rename(&path, path.with_extension("damaged"))
            } else {
                std::fs::remove_file(&path)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Left behind, it is replayed (idempotently) at the next start.
                Err(e) => {
                    tracing::warn!(error = %e, segment = n, "usage journal: could not remove a committed segment");
                }
            }
        }
    }

    /// Entries appended but not yet reported committed (tests, metrics).
    #[must_use]
    pub fn outstanding(&self) -> u64 {
        let st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.segments
            .values()
            .map(|c| c.appended.saturating_sub(c.committed))
            .sum()
    }
}

fn open_segment(dir: &Path, n: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, n))
}

/// The entries of a segment, and how many lines could not be read (a line torn by a crash in
/// the middle of its `write` was never acknowledged, so skipping it loses nothing recorded).
fn read_segment(path: &Path) -> io::Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut bad = 0;
    let reader = BufReader::new(File::open(path)?);
    let mut lines = reader.split(b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Entry>(&line) {
            Ok(e) => entries.push(e),
            // The last line without its newline: a torn write, never acknowledged.
            Err(_) if lines.peek().is_none() => {}
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "usage journal: unreadable line");
                bad += 1;
            }
        }
    }
    Ok((entries, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_domain::entities::UsageStatus;
    use aether_domain::pricing::{CostBreakdown, TokenUsage};
    use aether_domain::{ApiFormat, RequestId, Timestamp};

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("aether-journal-{}", uuid_like()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn uuid_like() -> String {
        format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    }

    fn record(n: u32) -> UsageRecord {
        let now = Timestamp::now();
        UsageRecord {
            id: RequestId::new(),
            client_request_id: None,
            user_id: None,
            api_key_id: None,
            provider_id: None,
            endpoint_id: None,
            provider_key_id: None,
            global_model_id: None,
            requested_model: format!("model-{n}"),
            upstream_model: None,
            api_format: ApiFormat::ClaudeCli,
            endpoint_api_format: None,
            is_stream: true,
            status: UsageStatus::Completed,
            status_code: Some(200),
            error_type: None,
            error_message: None,
            tokens: TokenUsage {
                input: u64::from(n),
                output: 7,
                ..TokenUsage::default()
            },
            cost: CostBreakdown::default(),
            unpriced: false,
            latency_ms: Some(12),
            ttfb_ms: None,
            client_ip: None,
            user_agent: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn files(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "LOCK")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn unreplayed_entries_come_back_after_a_crash_and_go_once_committed() {
        let d = dir();
        let (j, rec) = Journal::open(&d).unwrap();
        assert!(rec.is_empty());
        let a = record(1);
        let b = record(2);
        let seg = j.append(&a, None).unwrap();
        j.append(&b, None).unwrap();
        j.committed(&HashMap::from([(seg, 1)]));
        assert_eq!(j.outstanding(), 1);
        drop(j); // the process dies with one entry uncommitted

        let (j, rec) = Journal::open(&d).unwrap();
        // The whole uncommitted segment comes back: both entries (replay is idempotent).
        let ids: Vec<_> = rec.iter().map(|r| r.entry.record.id).collect();
        assert_eq!(ids, vec![a.id, b.id]);
        assert_eq!(rec[0].entry.record, a);
        let old = rec[0].segment;
        assert_eq!(j.outstanding(), 2);
        j.committed(&HashMap::from([(old, 2)]));
        assert_eq!(j.outstanding(), 0);
        drop(j);
        let (_j, rec) = Journal::open(&d).unwrap();
        assert!(rec.is_empty(), "a committed segment is not replayed");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_current_segment_is_truncated_once_committed() {
        let d = dir();
        let (j, _) = Journal::open(&d).unwrap();
        let seg = j.append(&record(1), None).unwrap();
        let path = segment_path(&d, seg);
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
        j.committed(&HashMap::from([(seg, 1)]));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(files(&d).len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_a_second_process_is_refused() {
        let d = dir();
        let (j, _) = Journal::open(&d).unwrap();
        let err = Journal::open(&d).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        let a = record(1);
        let seg = j.append(&a, None).unwrap();
        drop(j);
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(&d, seg))
            .unwrap();
        f.write_all(br#"{"record":{"id":"#).unwrap();
        let (_j, rec) = Journal::open(&d).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].entry.record, a);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_segment_rotates_and_old_segments_are_deleted_when_done() {
        let d = dir();
        let (j, _) = Journal::open(&d).unwrap();
        let first = j.append(&record(1), None).unwrap();
        j.state.lock().unwrap().bytes = ROTATE_BYTES;
        let second = j.append(&record(2), None).unwrap();
        assert_eq!(second, first + 1);
        assert_eq!(files(&d).len(), 2);
        j.committed(&HashMap::from([(first, 1)]));
        assert_eq!(files(&d), vec![format!("{second:020}.log")]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
