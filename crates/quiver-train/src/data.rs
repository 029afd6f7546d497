//! The data of the Plasma streaming example: `y = 4 + 3x + noise`, with x
//! uniform in [0, 10) and normal noise of sigma 1, from a fixed seed, so a
//! producer and a test compute the same rows.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};

use quiver::shm::rand::SplitMix64;

/// A seeded generator of `(x, y)` rows ([`SplitMix64`], Box–Muller). The
/// rows of a seed never change: the demo's checksums and the tests'
/// coefficients depend on them.
#[derive(Clone, Debug)]
pub struct LinearData {
    rng: SplitMix64,
    spare: Option<f64>,
}

impl LinearData {
    /// The true intercept.
    pub const INTERCEPT: f64 = 4.0;
    /// The true slope.
    pub const SLOPE: f64 = 3.0;

    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        LinearData { rng: SplitMix64::new(seed), spare: None }
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.rng.unit_f64()
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u1, u2) = (1.0 - self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// A whole number in `[min, max]`.
    pub fn between(&mut self, min: u64, max: u64) -> u64 {
        min + self.rng.below(max - min + 1)
    }

    /// A batch of `rows` rows with columns `x` and `y` (Float64).
    pub fn batch(&mut self, rows: usize) -> RecordBatch {
        let mut xs = Vec::with_capacity(rows);
        let mut ys = Vec::with_capacity(rows);
        for _ in 0..rows {
            let x = self.uniform() * 10.0;
            xs.push(x);
            ys.push(Self::INTERCEPT + Self::SLOPE * x + self.normal());
        }
        let x: ArrayRef = Arc::new(Float64Array::from(xs));
        let y: ArrayRef = Arc::new(Float64Array::from(ys));
        RecordBatch::try_from_iter([("x", x), ("y", y)]).unwrap_or_else(|_| unreachable!("two equal-length columns"))
    }
}

/// A checksum of the rows `(x, y)` of a batch, added over rows: independent
/// of how rows are split into batches and of the order batches arrive in,
/// so a consumer's sum over what it read equals the producer's over what it
/// wrote (and the workers' sums add up to it in the shared mode).
pub fn row_checksum(batch: &RecordBatch) -> u64 {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;
    let column = |name: &str| batch.column_by_name(name).map(|c| c.as_primitive::<Float64Type>().values().to_vec());
    let (Some(x), Some(y)) = (column("x"), column("y")) else {
        return 0;
    };
    x.iter().zip(&y).fold(0u64, |sum, (x, y)| {
        let mut h = x.to_bits() ^ y.to_bits().rotate_left(32);
        h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        sum.wrapping_add(h ^ (h >> 33))
    })
}

#[cfg(test)]
mod tests {
    use super::LinearData;

    #[test]
    fn a_seed_gives_the_same_rows_as_ever() {
        // Computed with the generator as it was before it moved to
        // `shm::rand`: the demo's and the example's data must not change.
        let mut data = LinearData::new(42);
        assert_eq!(data.between(1, 40), 14);
        assert_eq!(data.uniform(), 0.1599103928769201);
    }
}
