//! The caller's storage for received fds or handles: a slice of
//! `Option`s whose empty slots a receive fills. Pure code, shared by the
//! Unix receives and the Windows records.

/// The caller's storage as a receive fills it: each fd (or handle) goes
/// into the next empty slot, in order; a slot that holds something
/// already is skipped, never overwritten. The bound is exact: the number
/// of empty slots.
pub(crate) struct Slots<'a, T> {
    slots: &'a mut [Option<T>],
    next: usize,
}

impl<'a, T> Slots<'a, T> {
    pub(crate) fn new(slots: &'a mut [Option<T>]) -> Self {
        Slots { slots, next: 0 }
    }

    /// Puts `item` in the next empty slot, or gives it back when none is
    /// left.
    pub(crate) fn offer(&mut self, item: T) -> Option<T> {
        while let Some(slot) = self.slots.get_mut(self.next) {
            self.next += 1;
            if slot.is_none() {
                *slot = Some(item);
                return None;
            }
        }
        Some(item)
    }
}

/// How many slots of `slots` are empty: how many items a receive into
/// them can take.
pub(crate) fn room<T>(slots: &[Option<T>]) -> usize {
    slots.iter().filter(|slot| slot.is_none()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fill_empty_slots_in_order_and_skip_full_ones() {
        let mut storage = [None, Some(10), None, None];
        assert_eq!(room(&storage), 3);
        let mut slots = Slots::new(&mut storage);
        assert_eq!(slots.offer(1), None);
        assert_eq!(slots.offer(2), None);
        assert_eq!(slots.offer(3), None);
        assert_eq!(slots.offer(4), Some(4), "no room left: given back");
        assert_eq!(storage, [Some(1), Some(10), Some(2), Some(3)]);
        assert_eq!(room(&storage), 0);
    }

    #[test]
    fn no_slots_take_nothing() {
        let mut storage: [Option<u8>; 0] = [];
        assert_eq!(Slots::new(&mut storage).offer(1), Some(1));
    }
}
