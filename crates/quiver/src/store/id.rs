//! Object IDs: fixed-size, and derivable by any process without asking.
//!
//! An [`ObjectId`] is 24 bytes. [`ObjectId::sequential`] packs a namespace,
//! a partition and an offset into those bytes without hashing, so the map
//! from `(namespace, partition, offset)` to IDs is injective: two different
//! triples never give the same ID, whatever the namespaces. A producer and
//! every consumer compute the ID of the N-th record batch of a partition on
//! their own, as the Plasma streaming example did with counters.
//!
//! Byte layout of a sequential ID (little-endian):
//!
//! | bytes  | field                               |
//! |--------|-------------------------------------|
//! | 0      | kind: `b'S'`                        |
//! | 1..4   | zero                                |
//! | 4..8   | partition (`u32`)                   |
//! | 8..16  | namespace (`u64`)                   |
//! | 16..24 | offset (`u64`)                      |
//!
//! [`ObjectId::random`] sets kind `b'R'` and fills the rest from the OS's
//! random source; [`ObjectId::schema`] sets kind `b'F'` and a schema
//! fingerprint at bytes 8..16 (the object holding an Arrow schema);
//! [`ObjectId::named`] makes the IDs that the crates around the core find
//! by a name (a shared model, a Kafka source's status);
//! [`ObjectId::with_kind`] any other ID of a listed kind (Plasma's).
//! [`ObjectId::from_bytes`] takes any 24 bytes. Every kind byte in use is
//! an [`IdKind`], listed here and nowhere else (see `docs/format.md`).

use std::fmt;
use std::str::FromStr;

/// The kind of an [`ObjectId`]: its first byte. Every kind that quiver and
/// its crates give out is listed here, so none is given twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// `b'S'`: the batches of streams and anything else addressed by
    /// `(namespace, partition, offset)` ([`ObjectId::sequential`]).
    Sequential,
    /// `b'R'`: 23 random bytes ([`ObjectId::random`]).
    Random,
    /// `b'F'`: the object holding an Arrow schema ([`ObjectId::schema`]).
    Schema,
    /// `b'M'`: a shared model of `quiver-train`, by its name.
    SharedModel,
    /// `b'K'`: the status a Kafka source of `quiver-kafka` publishes, by its
    /// stream's name, process and a random token.
    KafkaStatus,
    /// `b'P'`: an object of `quiver.plasma`, Plasma's 20-byte ID followed by
    /// three zero bytes.
    Plasma,
    /// `b'p'`: the settings `quiver.plasma` keeps in a store (its requested
    /// capacity), by name.
    PlasmaSettings,
    /// `b'T'`: the cells in which the ranks of a `quiver.torch` loader agree
    /// on their steps, by stream and group, with a token the ranks share.
    TorchSteps,
}

impl IdKind {
    /// Every kind, in no particular order.
    pub const ALL: [IdKind; 8] = [
        IdKind::Sequential,
        IdKind::Random,
        IdKind::Schema,
        IdKind::SharedModel,
        IdKind::KafkaStatus,
        IdKind::Plasma,
        IdKind::PlasmaSettings,
        IdKind::TorchSteps,
    ];

    /// The kind's first byte.
    pub const fn byte(self) -> u8 {
        match self {
            IdKind::Sequential => b'S',
            IdKind::Random => b'R',
            IdKind::Schema => b'F',
            IdKind::SharedModel => b'M',
            IdKind::KafkaStatus => b'K',
            IdKind::Plasma => b'P',
            IdKind::PlasmaSettings => b'p',
            IdKind::TorchSteps => b'T',
        }
    }

    /// The kind whose first byte is `byte`, if it is one.
    pub fn from_byte(byte: u8) -> Option<IdKind> {
        IdKind::ALL.into_iter().find(|kind| kind.byte() == byte)
    }
}

const KIND_SEQUENTIAL: u8 = IdKind::Sequential.byte();
const KIND_RANDOM: u8 = IdKind::Random.byte();
const KIND_SCHEMA: u8 = IdKind::Schema.byte();

/// The ID of an object in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; ObjectId::LEN]);

impl ObjectId {
    /// The size of an ID in bytes.
    pub const LEN: usize = 24;

    /// An ID from its raw bytes.
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        ObjectId(bytes)
    }

    /// The raw bytes of the ID.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The ID of the `offset`-th object of `partition` in `namespace`.
    /// Distinct arguments always give distinct IDs (see the module docs).
    pub fn sequential(namespace: u64, partition: u32, offset: u64) -> Self {
        let mut bytes = [0u8; Self::LEN];
        bytes[0] = KIND_SEQUENTIAL;
        bytes[4..8].copy_from_slice(&partition.to_le_bytes());
        bytes[8..16].copy_from_slice(&namespace.to_le_bytes());
        bytes[16..24].copy_from_slice(&offset.to_le_bytes());
        ObjectId(bytes)
    }

    /// An ID of `kind` with the 23 bytes after the kind byte given.
    pub const fn with_kind(kind: IdKind, rest: [u8; Self::LEN - 1]) -> Self {
        let mut bytes = [0u8; Self::LEN];
        bytes[0] = kind.byte();
        let mut i = 0;
        while i < rest.len() {
            bytes[i + 1] = rest[i];
            i += 1;
        }
        ObjectId(bytes)
    }

    /// The ID of `kind` that names `name`: bytes 1..4 zero, 4..8 `tag`
    /// (little-endian), 8..16 the name's FNV-1a hash, 16..24 `token`. Any
    /// process derives it from the name; [`ObjectId::is_named`] finds it
    /// again among a store's objects.
    pub fn named(kind: IdKind, name: &str, tag: u32, token: [u8; 8]) -> Self {
        let mut bytes = [0u8; Self::LEN];
        bytes[0] = kind.byte();
        bytes[4..8].copy_from_slice(&tag.to_le_bytes());
        bytes[8..16].copy_from_slice(&fnv1a(name.as_bytes()).to_le_bytes());
        bytes[16..24].copy_from_slice(&token);
        ObjectId(bytes)
    }

    /// Whether this ID was made by [`ObjectId::named`] with `kind` and
    /// `name` (whatever its tag and token). Names are hashed: two names may
    /// share an ID's hash, so what such an object holds says which it is.
    pub fn is_named(&self, kind: IdKind, name: &str) -> bool {
        self.0[0] == kind.byte() && self.0[1..4] == [0; 3] && self.0[8..16] == fnv1a(name.as_bytes()).to_le_bytes()
    }

    /// The ID's kind, if its first byte is one of [`IdKind`]'s.
    pub fn kind(&self) -> Option<IdKind> {
        IdKind::from_byte(self.0[0])
    }

    /// The namespace of a sequential ID (`None` for other kinds).
    pub fn sequential_namespace(&self) -> Option<u64> {
        let b = &self.0;
        (b[0] == KIND_SEQUENTIAL && b[1..4] == [0; 3])
            .then(|| u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()))
    }

    /// The ID of the object that holds the Arrow schema with this fingerprint.
    pub fn schema(fingerprint: u64) -> Self {
        let mut bytes = [0u8; Self::LEN];
        bytes[0] = KIND_SCHEMA;
        bytes[8..16].copy_from_slice(&fingerprint.to_le_bytes());
        ObjectId(bytes)
    }

    /// `(namespace, partition, offset)` if this is a sequential ID.
    pub fn sequential_parts(&self) -> Option<(u64, u32, u64)> {
        if self.0[0] != KIND_SEQUENTIAL || self.0[1..4] != [0, 0, 0] {
            return None;
        }
        let word = |range: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..range.len()].copy_from_slice(&self.0[range]);
            u64::from_le_bytes(b)
        };
        Some((word(8..16), word(4..8) as u32, word(16..24)))
    }

    /// A random ID (kind `b'R'`, 23 random bytes from the OS).
    pub fn random() -> Self {
        let mut bytes = [0u8; Self::LEN];
        let mut filled = 0;
        while filled < Self::LEN - 1 {
            match rustix::rand::getrandom(&mut bytes[1 + filled..], rustix::rand::GetRandomFlags::empty()) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    // getrandom(2) cannot fail on Linux ≥ 3.17 once the pool is
                    // initialised; fall back to time and pid rather than panic.
                    let seed = crate::shm::clock::wall_ns() ^ ((std::process::id() as u64) << 32);
                    bytes[1..9].copy_from_slice(&seed.to_le_bytes());
                    break;
                }
            }
        }
        bytes[0] = KIND_RANDOM;
        ObjectId(bytes)
    }

    /// The three little-endian words the shared table stores.
    pub(crate) fn to_words(self) -> [u64; 3] {
        let w = |i: usize| u64::from_le_bytes(self.0[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        [w(0), w(1), w(2)]
    }

    /// The ID whose words are `words`.
    pub(crate) fn from_words(words: [u64; 3]) -> Self {
        let mut bytes = [0u8; Self::LEN];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        ObjectId(bytes)
    }

    /// A 64-bit hash of the ID for the shared index (a fixed function: every
    /// process must agree on it). Each word goes through the SplitMix64
    /// finaliser so that IDs differing only in their offset spread evenly.
    pub(crate) fn table_hash(&self) -> u64 {
        let [a, b, c] = self.to_words();
        mix(c ^ mix(b ^ mix(a)))
    }
}

/// FNV-1a, 64 bits: a fixed hash every process computes the same way (the
/// schema fingerprint, a checkpoint's checksum, the key hash of keyed
/// appends). Part of the formats: never change it.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((ns, partition, offset)) = self.sequential_parts() {
            return write!(f, "seq:{ns}:{partition}:{offset}");
        }
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// The error of parsing an [`ObjectId`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object id {0:?}: expected 48 hex digits or seq:NAMESPACE:PARTITION:OFFSET")]
pub struct ParseObjectIdError(String);

impl FromStr for ObjectId {
    type Err = ParseObjectIdError;

    /// Parses what `Display` prints: `seq:NS:PARTITION:OFFSET` or 48 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseObjectIdError(s.to_string());
        if let Some(rest) = s.strip_prefix("seq:") {
            let mut parts = rest.split(':');
            let (Some(ns), Some(p), Some(o), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return Err(err());
            };
            return Ok(ObjectId::sequential(
                ns.parse().map_err(|_| err())?,
                p.parse().map_err(|_| err())?,
                o.parse().map_err(|_| err())?,
            ));
        }
        if s.len() != Self::LEN * 2 || !s.is_ascii() {
            return Err(err());
        }
        let mut bytes = [0u8; Self::LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map_err(|_| err())?;
        }
        Ok(ObjectId(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sequential_round_trips_through_parts_and_text() {
        let id = ObjectId::sequential(7, 3, 1_000_000);
        assert_eq!(id.sequential_parts(), Some((7, 3, 1_000_000)));
        assert_eq!(id.to_string(), "seq:7:3:1000000");
        assert_eq!(id.to_string().parse::<ObjectId>(), Ok(id));
        assert_eq!(ObjectId::from_words(id.to_words()), id);
    }

    #[test]
    fn random_ids_differ_and_print_as_hex() {
        let (a, b) = (ObjectId::random(), ObjectId::random());
        assert_ne!(a, b);
        assert_eq!(a.sequential_parts(), None);
        assert_eq!(a.to_string().len(), 48);
        assert_eq!(a.to_string().parse::<ObjectId>(), Ok(a));
    }

    #[test]
    fn bad_text_is_an_error() {
        for bad in ["", "seq:1:2", "seq:1:2:3:4", "seq:x:2:3", "zz", &"g".repeat(48)] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn sequential_is_injective(a in any::<(u64, u32, u64)>(), b in any::<(u64, u32, u64)>()) {
            let ia = ObjectId::sequential(a.0, a.1, a.2);
            let ib = ObjectId::sequential(b.0, b.1, b.2);
            prop_assert_eq!(ia == ib, a == b);
        }
    }
}
