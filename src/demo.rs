//! The embedded demo database: fictitious customers and orders, seeded by code on first start.
//!
//! Deterministic (a fixed-seed generator), never committed to the repository. Every value
//! is invented: card numbers pass the Luhn check but use test ranges, SSNs use valid-looking
//! but fictitious numbers, phone numbers are in the 555-01xx range reserved for fiction.

use std::path::Path;

use rusqlite::{Connection, params};

pub const DEMO_FILE: &str = "demo.db";
const CUSTOMERS: u64 = 200;
const ORDERS: u64 = 1_000;

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Dennis",
    "Margaret",
    "John",
    "Katherine",
    "Tim",
    "Hedy",
    "Linus",
    "Sophie",
    "Niklaus",
    "Joan",
    "Guido",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
    "Ritchie", "Hamilton", "Backus", "Johnson", "Berners", "Lamarr", "Torvalds", "Wilson", "Wirth",
    "Clarke", "Rossum",
];
const PRODUCTS: &[(&str, i64)] = &[
    ("Keyboard", 4_900),
    ("Monitor", 18_900),
    ("Headset", 7_450),
    ("Webcam", 5_999),
    ("Dock", 12_900),
    ("Cable", 1_299),
];
const STATUSES: &[&str] = &["paid", "shipped", "delivered", "refunded"];

/// xorshift64*: small, fast, and the same sequence on every machine (the demo data, and
/// tests whose failures must reproduce).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn luhn_complete(prefix: &str) -> String {
    let digits: Vec<u32> = prefix.chars().filter_map(|c| c.to_digit(10)).collect();
    let mut sum = 0;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut d = *d;
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    format!("{prefix}{}", (10 - sum % 10) % 10)
}

/// Creates and seeds the demo database if it does not exist yet.
pub fn ensure(data_dir: &Path) -> Result<(), String> {
    let path = data_dir.join(DEMO_FILE);
    if path.exists() {
        return Ok(());
    }
    let tmp = data_dir.join(format!("{DEMO_FILE}.seeding"));
    let _ = std::fs::remove_file(&tmp);
    seed(&tmp).map_err(|e| format!("seeding the demo database: {e}"))?;
    // Rename last, so an interrupted seed never leaves a half-filled demo behind.
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

fn seed(path: &Path) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE customers (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT NOT NULL,
            phone TEXT NOT NULL,
            card_number TEXT NOT NULL,
            ssn TEXT NOT NULL,
            city TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id),
            product TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            amount_cents INTEGER NOT NULL,
            status TEXT NOT NULL,
            ordered_at TEXT NOT NULL
        );
        CREATE INDEX orders_customer ON orders(customer_id);",
    )?;
    let mut rng = Rng(0x5EED_A1F1_0C4B_0001);
    let cities = [
        "Lisbon", "Oslo", "Austin", "Kyoto", "Nairobi", "Lima", "Perth", "Ghent",
    ];
    let tx = conn.transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO customers (id, name, email, phone, card_number, ssn, city, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for id in 1..=CUSTOMERS {
            let first = rng.pick(FIRST);
            let last = rng.pick(LAST);
            let email = format!(
                "{}.{}{}@example.com",
                first.to_lowercase(),
                last.to_lowercase(),
                id
            );
            let phone = format!("+1-202-555-01{:02}", rng.below(100));
            let card_body = format!("4111{:011}", rng.below(100_000_000_000));
            let card = luhn_complete(&card_body);
            let card = format!(
                "{}-{}-{}-{}",
                &card[0..4],
                &card[4..8],
                &card[8..12],
                &card[12..16]
            );
            // Area 100-665, group 01-99, serial 0001-9999: well-formed, fictitious.
            let ssn = format!(
                "{:03}-{:02}-{:04}",
                100 + rng.below(566),
                1 + rng.below(99),
                1 + rng.below(9999)
            );
            let created = format!(
                "2025-{:02}-{:02}T{:02}:{:02}:00Z",
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60)
            );
            ins.execute(params![
                id as i64,
                format!("{first} {last}"),
                email,
                phone,
                card,
                ssn,
                *rng.pick(&cities),
                created
            ])?;
        }
        let mut ins = tx.prepare(
            "INSERT INTO orders (id, customer_id, product, quantity, amount_cents, status, ordered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for id in 1..=ORDERS {
            let (product, price) = *rng.pick(PRODUCTS);
            let quantity = 1 + rng.below(4) as i64;
            ins.execute(params![
                id as i64,
                1 + rng.below(CUSTOMERS) as i64,
                product,
                quantity,
                quantity * price,
                *rng.pick(STATUSES),
                format!(
                    "2026-{:02}-{:02}T{:02}:{:02}:00Z",
                    1 + rng.below(10),
                    1 + rng.below(28),
                    rng.below(24),
                    rng.below(60)
                )
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert_eq!(luhn_complete("411111111111111"), "4111111111111111");
    }

    #[test]
    fn seed_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        ensure(a.path()).unwrap();
        ensure(b.path()).unwrap();
        let dump = |p: &Path| {
            let c = Connection::open(p.join(DEMO_FILE)).unwrap();
            c.query_row(
                "SELECT group_concat(name || email || card_number || ssn, ',') FROM customers",
                [],
                |r| r.get::<_, String>(0),
            )
            .unwrap()
        };
        assert_eq!(dump(a.path()), dump(b.path()));
    }
}
