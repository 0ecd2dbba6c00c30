//! Opaque handles: boxed Rust values whose addresses C holds, checked against a registry of live
//! handles on every use, so a freed, foreign or wrongly typed pointer is reported as
//! `QM_STATUS_INVALID_HANDLE` instead of being dereferenced.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::FfiError;
use crate::status::QmStatus;

/// A Rust type that C holds by pointer. `KIND` tells handle types apart in the registry, so that a
/// `qm_config *` passed where a `qm_machine *` is expected is caught.
pub(crate) trait Handle: Sized {
    /// A distinct tag per handle type.
    const KIND: u8;
    /// The C name of the type, for error messages.
    const NAME: &'static str;
}

/// Live handles: address → kind. A `BTreeMap` behind a `Mutex` costs tens of nanoseconds per
/// call, nothing next to a QMP round trip.
static LIVE: Mutex<BTreeMap<usize, u8>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<usize, u8>> {
    // A panic while the lock is held cannot leave the map half-updated (insert/remove are the
    // only operations), so a poisoned lock is still usable.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Moves `value` to the heap, registers it, and returns the pointer C will hold.
pub(crate) fn into_handle<T: Handle>(value: T) -> *mut T {
    let ptr = Box::into_raw(Box::new(value));
    live().insert(ptr as usize, T::KIND);
    ptr
}

fn check<T: Handle>(ptr: *const T, argument: &str) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null(argument));
    }
    match live().get(&(ptr as usize)) {
        Some(&kind) if kind == T::KIND => Ok(()),
        Some(_) => Err(FfiError::new(
            QmStatus::InvalidHandle,
            format!("argument `{argument}` is a live handle of another type, not a {}", T::NAME),
        )),
        None => Err(FfiError::new(
            QmStatus::InvalidHandle,
            format!(
                "argument `{argument}` is not a live {} (already freed, or not created by this library)",
                T::NAME
            ),
        )),
    }
}

/// Borrows the value behind a live handle.
///
/// # Safety
/// Handles are not thread-safe: no other thread may use or free the same handle during the call.
pub(crate) unsafe fn borrow_mut<'a, T: Handle>(
    ptr: *mut T,
    argument: &str,
) -> Result<&'a mut T, FfiError> {
    check(ptr, argument)?;
    // SAFETY: the registry says `ptr` came from `into_handle::<T>` and has not been released, so
    // it points to a live, properly aligned `T`; the caller guarantees exclusive use.
    Ok(unsafe { &mut *ptr })
}

/// Unregisters a handle and gives back ownership of its value. NULL gives `None`.
///
/// # Safety
/// As for [`borrow_mut`].
pub(crate) unsafe fn release<T: Handle>(
    ptr: *mut T,
    argument: &str,
) -> Result<Option<T>, FfiError> {
    if ptr.is_null() {
        return Ok(None);
    }
    {
        let mut live = live();
        match live.get(&(ptr as usize)) {
            Some(&kind) if kind == T::KIND => {
                live.remove(&(ptr as usize));
            }
            _ => {
                drop(live);
                return check(ptr, argument).map(|()| None);
            }
        }
    }
    // SAFETY: the pointer was registered by `into_handle::<T>` (a `Box::into_raw`) and was just
    // unregistered, so this is the only place that takes ownership back.
    Ok(Some(*unsafe { Box::from_raw(ptr) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct A(u32);
    impl Handle for A {
        const KIND: u8 = 200;
        const NAME: &'static str = "test_a";
    }
    struct B;
    impl Handle for B {
        const KIND: u8 = 201;
        const NAME: &'static str = "test_b";
    }

    #[test]
    fn lifecycle_and_misuse() {
        let a = into_handle(A(7));
        // SAFETY: single-threaded use of a live handle.
        assert_eq!(unsafe { borrow_mut(a, "a") }.unwrap().0, 7);
        // SAFETY: the registry rejects the wrong type before any dereference.
        let wrong = unsafe { borrow_mut(a.cast::<B>(), "a") }.err().unwrap();
        assert_eq!(wrong.status, QmStatus::InvalidHandle);
        // SAFETY: a is live.
        assert_eq!(unsafe { release(a, "a") }.unwrap().unwrap().0, 7);
        // SAFETY: the registry rejects freed handles before any dereference.
        let freed = unsafe { borrow_mut(a, "a") }.err().unwrap();
        assert_eq!(freed.status, QmStatus::InvalidHandle);
        assert!(freed.message.contains("already freed"));
        // SAFETY: the registry rejects freed handles before taking ownership.
        let again = unsafe { release(a, "a") }.err().unwrap();
        assert_eq!(again.status, QmStatus::InvalidHandle);
        // SAFETY: NULL is accepted.
        assert!(unsafe { release::<A>(std::ptr::null_mut(), "a") }
            .unwrap()
            .is_none());
        // SAFETY: NULL is rejected before any dereference.
        let null = unsafe { borrow_mut::<A>(std::ptr::null_mut(), "a") }
            .err()
            .unwrap();
        assert_eq!(null.status, QmStatus::NullArgument);
    }
}
