//! Opaque handles: ids that C holds as `qm_config *` / `qm_machine *` but that are never
//! dereferenced. Every call looks its id up in a registry that owns the values, so a freed,
//! foreign or wrongly typed handle is reported as `QM_STATUS_INVALID_HANDLE`.
//!
//! An id is made from a serial number that is never reused: a freed handle stays invalid for the
//! life of the process, whatever is created after it. (Handles that were addresses, as before,
//! came back to life when the allocator gave a freed address to a new value, so a stale
//! `qm_machine_free()` could kill another machine's QEMU.)
//!
//! The id of serial `s` is `TAG | s << 1 | 1`. On 64-bit targets `TAG` sets bits 63 and 55, so an
//! id is never NULL, never below the 4 KiB that Go's runtime rejects in pointer-typed variables,
//! odd (never the address of one of our values), and not a user-space address: non-canonical on
//! x86-64 (4- and 5-level paging) and in the kernel half on AArch64 (bit 55, even with
//! top-byte-ignore). A C program that dereferences one faults at once instead of reading
//! something; a pointer C made itself can never pass for an id. The serial has 54 bits: at a
//! million handles a second it lasts 570 years, and when it runs out creation fails rather than
//! wraps.
//!
//! During a call the value is checked out of the registry (the entry stays, marked in use), so:
//! a second call on the same handle at the same time (from another thread, against the
//! one-thread-at-a-time rule) fails with "in use" instead of aliasing a `&mut`; and a handle freed
//! during another thread's call is dead at once, its value dropped when that call returns.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};

use crate::error::FfiError;
use crate::status::QmStatus;

/// A Rust type that C holds by handle. Handles may move between threads, hence `Send`.
pub(crate) trait Handle: Any + Send {
    /// The C name of the type, for error messages.
    const NAME: &'static str;
}

/// Bits of the serial number in an id.
#[cfg(target_pointer_width = "64")]
const SERIAL_BITS: u32 = 54;
/// The fixed bits of every id: 63 and 55 (see the module documentation).
#[cfg(target_pointer_width = "64")]
const TAG: usize = 0x8080 << 48;
/// Bits of the serial number in an id.
#[cfg(not(target_pointer_width = "64"))]
const SERIAL_BITS: u32 = 29;
/// The fixed bits of every id: the top two, the kernel's part of a 3G/1G split.
#[cfg(not(target_pointer_width = "64"))]
const TAG: usize = 0xC000_0000;

/// The bits above the serial and the low 1: where `TAG` lives.
const TAG_MASK: usize = !((1 << (SERIAL_BITS + 1)) - 1);
/// The largest serial number.
const MAX_SERIAL: usize = (1 << SERIAL_BITS) - 1;

fn encode(serial: usize) -> usize {
    TAG | serial << 1 | 1
}

/// The serial number of an id, if `id` has the form of one.
fn decode(id: usize) -> Option<usize> {
    (id & TAG_MASK == TAG && id & 1 == 1).then_some((id & !TAG_MASK) >> 1)
}

/// A live handle.
struct Entry {
    type_id: TypeId,
    name: &'static str,
    /// `None` while a call has the value checked out.
    value: Option<Box<dyn Any + Send>>,
}

/// Live handles by id, and the next serial number to hand out.
///
/// Never-reused serials in an ordered map, rather than slots with generation counters (slotmap,
/// handle tables): every id is its own generation, so no slot's counter can wrap around to an
/// old id, however often a program creates and frees. A lookup is a mutex and a walk of a tree
/// holding the few live handles, tens of nanoseconds next to a QMP round trip of a hundred
/// microseconds. The map only grows with live handles; new ids are always its largest keys.
struct Registry {
    next_serial: usize,
    live: BTreeMap<usize, Entry>,
}

impl Registry {
    const fn new() -> Registry {
        Registry {
            next_serial: 1,
            live: BTreeMap::new(),
        }
    }

    fn insert<T: Handle>(&mut self, value: Box<T>) -> Result<usize, FfiError> {
        if self.next_serial > MAX_SERIAL {
            return Err(FfiError::new(
                QmStatus::InvalidState,
                format!(
                    "no {} can be created: this process used up all {MAX_SERIAL} handle ids \
                     (ids are never reused)",
                    T::NAME
                ),
            ));
        }
        let id = encode(self.next_serial);
        self.next_serial += 1;
        self.live.insert(
            id,
            Entry {
                type_id: TypeId::of::<T>(),
                name: T::NAME,
                value: Some(value),
            },
        );
        Ok(id)
    }

    /// The live entry `id` if it holds a `T`, else the error that explains why not.
    fn entry<T: Handle>(&mut self, id: usize, argument: &str) -> Result<&mut Entry, FfiError> {
        let invalid = |what: String| {
            Err(FfiError::new(
                QmStatus::InvalidHandle,
                format!("argument `{argument}` {what}"),
            ))
        };
        if id == 0 {
            return Err(FfiError::null(argument));
        }
        let issued = decode(id).is_some_and(|s| s < self.next_serial);
        match self.live.get_mut(&id) {
            Some(entry) if entry.type_id == TypeId::of::<T>() => Ok(entry),
            Some(entry) => invalid(format!(
                "is a live {} handle, not a {}",
                entry.name,
                T::NAME
            )),
            None if issued => invalid(format!(
                "is not a live {}: it was already freed (a freed handle stays invalid)",
                T::NAME
            )),
            None => invalid(format!(
                "is not a {} handle: it was not created by this library",
                T::NAME
            )),
        }
    }

    /// Takes the value of a live `T` handle out for the length of a call.
    fn check_out<T: Handle>(&mut self, id: usize, argument: &str) -> Result<Box<T>, FfiError> {
        let entry = self.entry::<T>(id, argument)?;
        let value = entry.value.take().ok_or_else(|| {
            FfiError::new(
                QmStatus::InvalidHandle,
                format!(
                    "argument `{argument}` is in use by another call: a {} must be used by one \
                     thread at a time",
                    T::NAME
                ),
            )
        })?;
        value.downcast::<T>().map_err(|value| {
            // Unreachable: the entry's type was checked. Put the value back all the same.
            entry.value = Some(value);
            FfiError::new(
                QmStatus::Panic,
                "internal error: a handle's value has the wrong type",
            )
        })
    }

    /// Puts a checked-out value back. If the handle was freed meanwhile, gives the value back
    /// to be dropped (outside the lock).
    fn check_in(&mut self, id: usize, value: Box<dyn Any + Send>) -> Option<Box<dyn Any + Send>> {
        match self.live.get_mut(&id) {
            Some(entry) if entry.value.is_none() => {
                entry.value = Some(value);
                None
            }
            _ => Some(value),
        }
    }

    /// Removes a live `T` handle and gives its value back, or `None` when a call has it checked
    /// out (the call's check-in then drops it).
    fn remove<T: Handle>(&mut self, id: usize, argument: &str) -> Result<Option<Box<T>>, FfiError> {
        self.entry::<T>(id, argument)?;
        let entry = self.live.remove(&id);
        Ok(entry
            .and_then(|e| e.value)
            .and_then(|v| v.downcast::<T>().ok()))
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

fn registry() -> MutexGuard<'static, Registry> {
    // The registry is never left half-updated (no code that can panic runs between its reads
    // and writes), so a lock poisoned by a panic elsewhere is still usable.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands `value` to the registry and returns the id C will hold, as the handle's pointer type.
pub(crate) fn into_handle<T: Handle>(value: T) -> Result<*mut T, FfiError> {
    let id = registry().insert(Box::new(value))?;
    // The id is only ever looked up, never dereferenced: it carries no provenance.
    Ok(std::ptr::without_provenance_mut(id))
}

/// The value behind a live handle, checked out of the registry until this is dropped.
pub(crate) struct Borrowed<T: Handle> {
    id: usize,
    /// `Some` until `drop`.
    value: Option<Box<T>>,
}

impl<T: Handle> Deref for Borrowed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
            .as_deref()
            .expect("a Borrowed holds its value until dropped")
    }
}

impl<T: Handle> DerefMut for Borrowed<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
            .as_deref_mut()
            .expect("a Borrowed holds its value until dropped")
    }
}

impl<T: Handle> Drop for Borrowed<T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            let orphan = registry().check_in(self.id, value);
            // A handle freed during the call: its value is dropped here, the lock released.
            drop(orphan);
        }
    }
}

/// Borrows the value behind a live `T` handle for the length of a call. NULL is
/// `QM_STATUS_NULL_ARGUMENT`; anything else that is not a live `T` handle, or one in use by
/// another call, is `QM_STATUS_INVALID_HANDLE` with a message saying which.
pub(crate) fn borrow<T: Handle>(ptr: *const T, argument: &str) -> Result<Borrowed<T>, FfiError> {
    let id = ptr.addr();
    let value = registry().check_out::<T>(id, argument)?;
    Ok(Borrowed {
        id,
        value: Some(value),
    })
}

/// Unregisters a live `T` handle and gives back its value; `None` for NULL, or when another
/// call has it checked out (the value is then dropped when that call returns). The handle is
/// invalid from now on. The caller drops the value, outside the registry's lock.
pub(crate) fn release<T: Handle>(ptr: *mut T, argument: &str) -> Result<Option<T>, FfiError> {
    if ptr.is_null() {
        return Ok(None);
    }
    let value = registry().remove::<T>(ptr.addr(), argument)?;
    Ok(value.map(|b| *b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct A(u32);
    impl Handle for A {
        const NAME: &'static str = "test_a";
    }
    struct B;
    impl Handle for B {
        const NAME: &'static str = "test_b";
    }
    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Handle for Counted {
        const NAME: &'static str = "test_counted";
    }

    fn err<T>(r: Result<T, FfiError>) -> FfiError {
        r.err().expect("an error")
    }

    #[test]
    fn lifecycle_and_misuse() {
        let a = into_handle(A(7)).unwrap();
        assert_eq!(borrow(a, "a").unwrap().0, 7);
        borrow(a, "a").unwrap().0 = 8;
        assert_eq!(borrow(a, "a").unwrap().0, 8);
        let wrong = err(borrow(a.cast::<B>(), "a"));
        assert_eq!(wrong.status, QmStatus::InvalidHandle);
        assert_eq!(
            wrong.message,
            "argument `a` is a live test_a handle, not a test_b"
        );
        assert!(err(release(a.cast::<B>(), "a"))
            .message
            .contains("not a test_b"));
        assert_eq!(release(a, "a").unwrap().unwrap().0, 8);
        let freed = err(borrow(a, "a"));
        assert_eq!(freed.status, QmStatus::InvalidHandle);
        assert!(freed.message.contains("already freed"), "{}", freed.message);
        let again = err(release(a, "a"));
        assert_eq!(again.status, QmStatus::InvalidHandle);
        assert!(release::<A>(std::ptr::null_mut(), "a").unwrap().is_none());
        let null = err(borrow::<A>(std::ptr::null(), "a"));
        assert_eq!(null.status, QmStatus::NullArgument);
        let local = 5u32;
        let foreign = err(borrow(std::ptr::addr_of!(local).cast::<A>(), "a"));
        assert_eq!(foreign.status, QmStatus::InvalidHandle);
        assert!(
            foreign.message.contains("not created by this library"),
            "{}",
            foreign.message
        );
    }

    #[test]
    fn ids_are_tagged_odd_and_never_reused() {
        let mut ids = Vec::new();
        for i in 0..1000 {
            let h = into_handle(A(i)).unwrap();
            let id = h.addr();
            assert_eq!(id & TAG_MASK, TAG, "{id:#x}");
            assert_eq!(id & 1, 1);
            assert!(id > 4096);
            assert!(decode(id).is_some());
            ids.push(id);
            release(h, "h").unwrap().unwrap();
        }
        // Serials only grow (other tests create handles concurrently, so not by exactly 1).
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(encode(1), 0x8080_0000_0000_0003);
        assert_eq!(decode(encode(MAX_SERIAL)), Some(MAX_SERIAL));
        assert_eq!(decode(0x1000), None);
    }

    #[test]
    fn running_out_of_serials_is_an_error_not_a_wrap() {
        let mut r = Registry::new();
        r.next_serial = MAX_SERIAL;
        let last = r.insert(Box::new(A(1))).unwrap();
        assert_eq!(decode(last), Some(MAX_SERIAL));
        let e = r.insert(Box::new(A(2))).unwrap_err();
        assert_eq!(e.status, QmStatus::InvalidState);
        assert!(e.message.contains("never reused"), "{}", e.message);
        let e = r.insert(Box::new(A(3))).unwrap_err();
        assert_eq!(e.status, QmStatus::InvalidState);
        assert_eq!(r.check_out::<A>(last, "x").unwrap().0, 1);
    }

    #[test]
    fn a_handle_in_use_cannot_be_borrowed_again() {
        let a = into_handle(A(1)).unwrap();
        {
            let mut first = borrow(a, "a").unwrap();
            let second = err(borrow(a, "a"));
            assert_eq!(second.status, QmStatus::InvalidHandle);
            assert!(second.message.contains("in use"), "{}", second.message);
            first.0 = 2;
        }
        assert_eq!(borrow(a, "a").unwrap().0, 2);
        release(a, "a").unwrap().unwrap();
    }

    #[test]
    fn a_handle_freed_in_use_dies_at_once_and_its_value_when_the_call_ends() {
        let drops = Arc::new(AtomicUsize::new(0));
        let h = into_handle(Counted(drops.clone())).unwrap();
        let in_use = borrow(h, "h").unwrap();
        assert!(release(h, "h").unwrap().is_none());
        assert!(err(borrow(h, "h")).message.contains("already freed"));
        assert!(err(release(h, "h")).message.contains("already freed"));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(in_use);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(err(borrow(h, "h")).message.contains("already freed"));
    }

    #[test]
    fn a_panic_during_a_call_gives_the_value_back() {
        let a = into_handle(A(3)).unwrap();
        let caught = std::panic::catch_unwind(|| {
            let _in_use = borrow(a, "a").unwrap();
            panic!("boom");
        });
        assert!(caught.is_err());
        assert_eq!(borrow(a, "a").unwrap().0, 3);
        release(a, "a").unwrap().unwrap();
    }
}
