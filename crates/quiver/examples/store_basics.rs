//! The object store in a few lines: create a store, write and seal an
//! object, read it back zero-copy from another handle (as another process
//! would), delete it. Run with `cargo run --example store_basics`.

use std::time::Duration;

use quiver::{CreateOptions, ObjectId, Store, StoreConfig};

fn main() -> Result<(), quiver::StoreError> {
    let name = format!("example-{}", std::process::id());
    // One file in /dev/shm, its whole size reserved and pre-faulted now.
    let producer = Store::create(StoreConfig::new(&name).capacity(64 << 20))?;

    // Producer and consumers agree on IDs without talking: the 3rd batch of
    // partition 0 in namespace 7 has this ID in every process.
    let id = ObjectId::sequential(7, 0, 3);
    let mut builder = producer.create_object(id, 11, b"schema-v1")?;
    builder.data_mut().copy_from_slice(b"hello world");
    builder.seal()?; // immutable and visible now; waiters wake

    // Any process: open by name, wait up to a second for the object.
    let consumer = Store::open(&name)?;
    let view = consumer.get(id, Duration::from_secs(1))?.expect("sealed above");
    assert_eq!(view.data(), b"hello world"); // a slice of the shared mapping
    assert_eq!(view.metadata(), b"schema-v1");
    println!("read {:?} from {}", std::str::from_utf8(view.data()).unwrap(), consumer.path().display());

    // Deleting a viewed object defers the free until the last view drops.
    producer.delete(id)?;
    assert!(!producer.contains(id)?);
    assert_eq!(view.data(), b"hello world");
    drop(view);

    // When the store is full, create can wait for space instead of failing.
    let options = CreateOptions::new().timeout(Duration::from_millis(100)).pinned(false);
    producer.create_object_with(ObjectId::random(), 1024, &[], options)?.seal()?;
    println!("{:?}", producer.stats()?);

    Store::remove(&name)
}
