//! The audit log's hash chain: every stored event is a link whose hash covers the link
//! before it, its own position and its record exactly as the store keeps it.
//!
//! `hash = hex(SHA-256(prev_hash || seq || record))`, where
//! - `prev_hash` is the previous link's hash as 64 lowercase hex characters (ASCII), or
//!   [`GENESIS`] for the first event;
//! - `seq` is the event's position in the log, 8 bytes, big-endian two's complement;
//! - `record` is the bytes of the store's `record` column: on SQLite the JSON text as
//!   written, on PostgreSQL `record::text` (the jsonb's canonical text).
//!
//! The first two parts have fixed lengths, so the encoding is unambiguous. Each store keeps
//! a one-row chain head (last `seq`, last `hash`), read and extended in the transaction that
//! appends a batch, under a lock every appender takes; a new event's `seq` is the head's
//! plus one.
//!
//! [`verify`] walks the log in `seq` order, a page at a time, and names the first link that
//! does not hold. What this proves and what it does not: README, "Audit".

use crate::store::{Store, StoreError};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Rows read per page while verifying.
pub const VERIFY_PAGE: usize = 1000;
/// How many times [`verify`] follows a log that grew while it was being walked.
const MAX_PASSES: usize = 64;

/// The hash of the link at `seq` holding `record`, after `prev_hash`.
pub fn link_hash(prev_hash: &str, seq: i64, record: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(&seq.to_be_bytes());
    ctx.update(record.as_bytes());
    hex::encode(ctx.finish().as_ref())
}

/// The chain's last link: its position and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }

    /// The head after appending `record` as the next link (`seq` one more).
    pub fn extend(&self, record: &str) -> ChainHead {
        let seq = self.seq + 1;
        ChainHead {
            seq,
            hash: link_hash(&self.hash, seq, record),
        }
    }
}

impl std::fmt::Display for ChainHead {
    /// `SEQ:HASH`, the form [`Pin::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// A link recorded outside the store (a head printed by an earlier `airlock audit verify`):
/// the chain must still pass through it.
pub type Pin = ChainHead;

impl ChainHead {
    /// Reads `SEQ:HASH`.
    pub fn parse(s: &str) -> Result<ChainHead, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not SEQ:HASH"))?;
        let seq: i64 = seq
            .trim()
            .parse()
            .map_err(|_| format!("`{seq}` is not a sequence number"))?;
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{hash}` is not a hex SHA-256"));
        }
        Ok(ChainHead { seq, hash })
    }
}

/// One stored link, as read back for verification.
#[derive(Debug, Clone)]
pub struct ChainRow {
    pub seq: i64,
    pub id: String,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
    /// The `record` column exactly as hashed (see the module docs).
    pub record: String,
}

/// The first link that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The position of the offending event (or, for a truncated tail, the recorded head's).
    pub seq: i64,
    /// The offending event's id, when there is a row to name.
    pub id: Option<String>,
    pub reason: String,
    /// Events verified before it.
    pub verified: u64,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "seq {} (event {id}): {}", self.seq, self.reason)?,
            None => write!(f, "seq {}: {}", self.seq, self.reason)?,
        }
        write!(f, " ({} events before it verified)", self.verified)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every link holds; `head` is the last one (record it elsewhere to pin it).
    Intact {
        events: u64,
        head: ChainHead,
    },
    Broken(Break),
}

/// The walk's state: what the next link must chain to.
struct Walk {
    head: ChainHead,
    events: u64,
    pin: Option<Pin>,
    pin_seen: bool,
}

impl Walk {
    fn new(pin: Option<Pin>) -> Walk {
        Walk {
            head: ChainHead::genesis(),
            events: 0,
            pin,
            pin_seen: false,
        }
    }

    fn broken(&self, seq: i64, id: Option<&str>, reason: String) -> Break {
        Break {
            seq,
            id: id.map(str::to_string),
            reason,
            verified: self.events,
        }
    }

    fn previous(&self) -> String {
        if self.head.seq == 0 && self.events == 0 {
            "the chain's start (genesis)".to_string()
        } else {
            format!("the previous event's (seq {})", self.head.seq)
        }
    }

    fn step(&mut self, row: &ChainRow) -> Result<(), Break> {
        let id = Some(row.id.as_str());
        if let Some(pin) = &self.pin
            && !self.pin_seen
            && pin.seq < row.seq
        {
            return Err(self.broken(
                pin.seq,
                None,
                format!(
                    "the pinned event is gone (the chain goes from seq {} to {})",
                    self.head.seq, row.seq
                ),
            ));
        }
        let Some(prev) = row.prev_hash.as_deref() else {
            return Err(self.broken(
                row.seq,
                id,
                "the event is not chained (no prev_hash)".into(),
            ));
        };
        if prev != self.head.hash {
            return Err(self.broken(
                row.seq,
                id,
                format!(
                    "prev_hash does not match {} hash: an event was deleted, inserted or moved before it, or a hash was rewritten",
                    self.previous()
                ),
            ));
        }
        let hash = link_hash(prev, row.seq, &row.record);
        if row.hash.as_deref() != Some(hash.as_str()) {
            return Err(self.broken(
                row.seq,
                id,
                "hash does not match the event's record and position: the row was edited or moved"
                    .into(),
            ));
        }
        if let Some(pin) = &self.pin
            && pin.seq == row.seq
        {
            if pin.hash != hash {
                return Err(self.broken(
                    row.seq,
                    id,
                    format!(
                        "hash {hash} differs from the pinned {}: the chain was rewritten from here or earlier",
                        pin.hash
                    ),
                ));
            }
            self.pin_seen = true;
        }
        self.head = ChainHead { seq: row.seq, hash };
        self.events += 1;
        Ok(())
    }

    /// Walks every row after the current head; how many it read.
    async fn run(&mut self, store: &dyn Store) -> Result<Result<u64, Break>, StoreError> {
        let mut read = 0;
        loop {
            let page = store.audit_chain_page(self.head.seq, VERIFY_PAGE).await?;
            for row in &page {
                if let Err(b) = self.step(row) {
                    return Ok(Err(b));
                }
            }
            read += page.len() as u64;
            if page.len() < VERIFY_PAGE {
                return Ok(Ok(read));
            }
        }
    }
}

/// Walks the store's audit chain in `seq` order, a page at a time, and checks every link,
/// the recorded chain head, and (when given) that the chain still passes through `pin`.
/// `Err` only when the store cannot be read.
pub async fn verify(store: &dyn Store, pin: Option<Pin>) -> Result<Verdict, StoreError> {
    let mut walk = Walk::new(pin);
    // A head read earlier that was ahead of the rows walked so far.
    let mut ahead: Option<ChainHead> = None;
    for _ in 0..MAX_PASSES {
        let read = match walk.run(store).await? {
            Ok(n) => n,
            Err(b) => return Ok(Verdict::Broken(b)),
        };
        if let Some(h) = &ahead
            && read == 0
        {
            // The head was committed with its rows; they are gone.
            return Ok(Verdict::Broken(walk.broken(
                h.seq,
                None,
                format!(
                    "the recorded chain head is seq {} but the last event is seq {}: the events after it were deleted",
                    h.seq, walk.head.seq
                ),
            )));
        }
        let Some(head) = store.audit_chain_head().await? else {
            return Ok(Verdict::Broken(walk.broken(
                walk.head.seq,
                None,
                "the chain head record is missing".into(),
            )));
        };
        if head.seq > walk.head.seq {
            // Appended while we walked (or the tail was deleted: the next pass tells).
            ahead = Some(head);
            continue;
        }
        if head.seq < walk.head.seq {
            let after = store.audit_chain_page(head.seq, 1).await?;
            let (seq, id) = after
                .first()
                .map(|r| (r.seq, Some(r.id.as_str())))
                .unwrap_or((walk.head.seq, None));
            return Ok(Verdict::Broken(walk.broken(
                seq,
                id,
                format!(
                    "the event is after the recorded chain head (seq {}): it was added without extending the head, or the head was rolled back",
                    head.seq
                ),
            )));
        }
        if head.hash != walk.head.hash {
            return Ok(Verdict::Broken(walk.broken(
                head.seq,
                None,
                format!(
                    "the recorded chain head hash {} differs from the last event's {}",
                    head.hash, walk.head.hash
                ),
            )));
        }
        if let Some(pin) = &walk.pin
            && !walk.pin_seen
        {
            return Ok(Verdict::Broken(walk.broken(
                pin.seq,
                None,
                format!(
                    "the pinned event is beyond the chain's end (seq {})",
                    walk.head.seq
                ),
            )));
        }
        return Ok(Verdict::Intact {
            events: walk.events,
            head: walk.head,
        });
    }
    Err(StoreError::Other(format!(
        "the audit log kept growing while it was verified ({} events so far); retry",
        walk.events
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_hash_is_sha256_of_prev_seq_and_record() {
        // printf '%s' "$GENESIS" ; printf '\0\0\0\0\0\0\0\1' ; printf '{}'  | sha256sum
        let mut input = GENESIS.as_bytes().to_vec();
        input.extend_from_slice(&1i64.to_be_bytes());
        input.extend_from_slice(b"{}");
        assert_eq!(
            link_hash(GENESIS, 1, "{}"),
            crate::digest::sha256_hex(&input)
        );
        assert_ne!(link_hash(GENESIS, 1, "{}"), link_hash(GENESIS, 2, "{}"));
    }

    #[test]
    fn a_pin_reads_back_what_a_head_prints() {
        let h = ChainHead::genesis().extend("{}");
        assert_eq!(ChainHead::parse(&h.to_string()), Ok(h));
        assert!(ChainHead::parse("12").is_err());
        assert!(ChainHead::parse("x:00").is_err());
        assert!(ChainHead::parse("1:zz").is_err());
    }

    fn rows(n: i64) -> Vec<ChainRow> {
        let mut head = ChainHead::genesis();
        (1..=n)
            .map(|i| {
                let record = format!("{{\"n\":{i}}}");
                let next = head.extend(&record);
                let row = ChainRow {
                    seq: next.seq,
                    id: format!("e{i}"),
                    prev_hash: Some(head.hash.clone()),
                    hash: Some(next.hash.clone()),
                    record,
                };
                head = next;
                row
            })
            .collect()
    }

    fn walk(rows: &[ChainRow], pin: Option<Pin>) -> Result<u64, Break> {
        let mut w = Walk::new(pin);
        for r in rows {
            w.step(r)?;
        }
        Ok(w.events)
    }

    #[test]
    fn the_walk_names_the_first_link_that_does_not_hold() {
        let good = rows(5);
        assert_eq!(walk(&good, None), Ok(5));

        let mut edited = good.clone();
        edited[2].record = "{\"n\":99}".into();
        let b = walk(&edited, None).unwrap_err();
        assert_eq!((b.seq, b.id.as_deref(), b.verified), (3, Some("e3"), 2));

        let mut deleted = good.clone();
        deleted.remove(2);
        let b = walk(&deleted, None).unwrap_err();
        assert_eq!((b.seq, b.id.as_deref()), (4, Some("e4")));

        let mut swapped = good.clone();
        swapped.swap(1, 2);
        (swapped[1].seq, swapped[2].seq) = (2, 3);
        let b = walk(&swapped, None).unwrap_err();
        assert_eq!((b.seq, b.id.as_deref()), (2, Some("e3")));

        let mut unchained = good.clone();
        unchained[0].prev_hash = None;
        assert_eq!(walk(&unchained, None).unwrap_err().seq, 1);
    }

    #[test]
    fn a_pin_catches_a_consistently_rewritten_chain() {
        let good = rows(5);
        let pin = ChainHead {
            seq: 3,
            hash: good[2].hash.clone().unwrap(),
        };
        assert_eq!(walk(&good, Some(pin.clone())), Ok(5));
        // Rewritten from seq 2 on, every hash recomputed: only the pin notices.
        let mut rewritten = good[..1].to_vec();
        let mut head = ChainHead {
            seq: 1,
            hash: good[0].hash.clone().unwrap(),
        };
        for i in 2..=5 {
            let record = format!("{{\"n\":{}}}", i * 10);
            let next = head.extend(&record);
            rewritten.push(ChainRow {
                seq: i,
                id: format!("e{i}"),
                prev_hash: Some(head.hash.clone()),
                hash: Some(next.hash.clone()),
                record,
            });
            head = next;
        }
        assert_eq!(walk(&rewritten, None), Ok(5));
        let b = walk(&rewritten, Some(pin.clone())).unwrap_err();
        assert_eq!(b.seq, 3);
        // A pinned event that disappeared.
        let mut gone = good.clone();
        gone.remove(2);
        assert_eq!(walk(&gone, Some(pin)).unwrap_err().seq, 3);
    }
}
