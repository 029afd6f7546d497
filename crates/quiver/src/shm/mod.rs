//! The mapped file: the only module that talks to the operating system about
//! shared memory.
//!
//! It owns these things, each in its own file:
//!
//! - `region`: creating (with the whole size reserved and pre-faulted) and
//!   opening the file, and bounds-checked access to what is inside it;
//! - [`error`]: [`ShmError`], what can go wrong with all of that;
//! - `lock`: the robust, process-shared mutex that guards metadata, which
//!   reports when its previous holder died so the caller can repair;
//! - [`wait`]: futex waits with timeouts on words in the file, and the
//!   spin-then-park strategy;
//! - `liveness`: per-client locks that the OS releases when a process dies;
//! - [`clock`]: the monotonic clock (leases, deadlines, liveness) and the
//!   wall clock (times shown to users, append times);
//! - [`rand`]: [`rand::SplitMix64`], the one seeded pseudo-random generator.
//!
//! The last two are here because this is the bottom layer, which every
//! other may use; they import nothing from the crate.
//!
//! Everything above this module works with offsets and the plain types made
//! by `shared_struct!`, never with pointers.

pub mod clock;
pub(crate) mod crash;
pub mod error;
pub(crate) mod liveness;
pub(crate) mod lock;
pub mod rand;
pub(crate) mod region;
pub(crate) mod sigbus;
pub mod wait;

pub(crate) use error::holder_text;
pub use error::ShmError;
pub use liveness::process_stopped;
pub(crate) use region::{creating_name, inspect, remove_stale_creations, Region, Span};

use std::sync::atomic::{AtomicU32, AtomicU64};

/// A type that may live in the shared file and be read through a shared
/// reference while other processes change it.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]`, contain only [`SharedField`] types
/// (atomics and arrays of them), so that every bit pattern is a valid value,
/// concurrent changes by other processes are not data races, and the type
/// holds no pointers. Use `shared_struct!` rather than implementing this
/// by hand: it checks all of that at compile time.
pub unsafe trait Shared: Sized + Sync {}

/// A field type allowed inside a [`Shared`] struct: valid for every bit
/// pattern and mutated only through atomic operations.
pub trait SharedField {}
impl SharedField for AtomicU32 {}
impl SharedField for AtomicU64 {}
impl<T: SharedField, const N: usize> SharedField for [T; N] {}

pub(crate) const fn assert_shared_field<T: SharedField>() {}

/// Declares a `#[repr(C)]` struct for the shared file and implements
/// [`Shared`] for it after checking, at compile time, that every field is a
/// [`SharedField`]. Crate-private: only quiver's own layers lay out the file.
macro_rules! shared_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty ),*
        }
        const _: () = { $( $crate::shm::assert_shared_field::<$ty>(); )* };
        // SAFETY: the struct is `#[repr(C)]` and the const block above proves
        // that each field is a `SharedField` (an atomic or an array of them),
        // which is exactly the contract of `Shared`.
        unsafe impl $crate::shm::Shared for $name {}
        // A struct of shared fields is itself one, so structs can nest.
        impl $crate::shm::SharedField for $name {}
    };
}
pub(crate) use shared_struct;

// SAFETY: an atomic integer is valid for every bit pattern, holds no
// pointer, and is only changed atomically: the contract of `Shared`.
unsafe impl Shared for AtomicU64 {}
// SAFETY: as for AtomicU64.
unsafe impl Shared for AtomicU32 {}
