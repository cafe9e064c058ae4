//! The local agent's services and checks, indexed so that no step of the
//! agent scans every entry: the next entry to sync, the live count (for
//! the limits), the next timer and a service's checks are each found in
//! O(log n). An agent at its limits (10,000 services, 20,000 checks)
//! otherwise spent O(n) on every input and O(n²) on a full sync.
//!
//! Every change to a row goes through [`Table::get_mut`] (a guard that
//! re-indexes the row when dropped), [`Table::insert`], [`Table::remove`],
//! [`Table::retain`] or [`Table::update_all`], so the indexes cannot
//! drift from the rows.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};

use crate::clock::Instant;

/// What the table indexes of a row.
pub(super) trait Row {
    /// In the catalog as it is here.
    fn in_sync(&self) -> bool;
    /// Removed here, kept until the catalog has forgotten it too.
    fn deleted(&self) -> bool;
    /// When the agent must look at this row next, if ever.
    fn wake(&self) -> Option<Instant>;
    /// The group the row belongs to (a check's service ID; "" for none).
    fn group(&self) -> &str;
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Marks {
    in_sync: bool,
    deleted: bool,
    wake: Option<Instant>,
    group: String,
}

impl Marks {
    fn of(row: &impl Row) -> Marks {
        Marks {
            in_sync: row.in_sync(),
            deleted: row.deleted(),
            wake: row.wake(),
            group: row.group().to_owned(),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Table<T> {
    rows: BTreeMap<String, T>,
    /// IDs of rows not in sync.
    dirty: BTreeSet<String>,
    /// Rows not deleted.
    live: usize,
    timers: BTreeSet<(Instant, String)>,
    /// (group, id) of live rows in a non-empty group.
    groups: BTreeSet<(String, String)>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            rows: BTreeMap::new(),
            dirty: BTreeSet::new(),
            live: 0,
            timers: BTreeSet::new(),
            groups: BTreeSet::new(),
        }
    }
}

impl<T: Row> Table<T> {
    fn index(&mut self, id: &str, m: &Marks) {
        if !m.in_sync {
            self.dirty.insert(id.to_owned());
        }
        if !m.deleted {
            self.live += 1;
            if !m.group.is_empty() {
                self.groups.insert((m.group.clone(), id.to_owned()));
            }
        }
        if let Some(t) = m.wake {
            self.timers.insert((t, id.to_owned()));
        }
    }

    fn unindex(&mut self, id: &str, m: &Marks) {
        if !m.in_sync {
            self.dirty.remove(id);
        }
        if !m.deleted {
            self.live -= 1;
            if !m.group.is_empty() {
                self.groups.remove(&(m.group.clone(), id.to_owned()));
            }
        }
        if let Some(t) = m.wake {
            self.timers.remove(&(t, id.to_owned()));
        }
    }

    pub fn get(&self, id: &str) -> Option<&T> {
        self.rows.get(id)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.rows.contains_key(id)
    }

    /// The row to change; it is re-indexed when the guard is dropped.
    pub fn get_mut(&mut self, id: &str) -> Option<RowMut<'_, T>> {
        let before = Marks::of(self.rows.get(id)?);
        Some(RowMut {
            id: id.to_owned(),
            before,
            table: self,
        })
    }

    pub fn insert(&mut self, id: String, row: T) -> Option<T> {
        let old = self.remove(&id);
        self.index(&id, &Marks::of(&row));
        self.rows.insert(id, row);
        old
    }

    pub fn remove(&mut self, id: &str) -> Option<T> {
        let row = self.rows.remove(id)?;
        self.unindex(id, &Marks::of(&row));
        Some(row)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &T) -> bool) {
        let gone: Vec<String> = self
            .rows
            .iter()
            .filter(|(id, row)| !keep(id, row))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    /// Changes every row (O(n): for a full sync's comparison only).
    pub fn update_all(&mut self, mut f: impl FnMut(&str, &mut T)) {
        let ids: Vec<String> = self.rows.keys().cloned().collect();
        for id in ids {
            if let Some(mut row) = self.get_mut(&id) {
                f(&id, &mut row);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.rows.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.rows.values()
    }

    /// Rows not deleted.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The first row (by ID) not in sync.
    pub fn first_dirty(&self) -> Option<(&String, &T)> {
        let id = self.dirty.first()?;
        self.rows.get_key_value(id)
    }

    pub fn all_in_sync(&self) -> bool {
        self.dirty.is_empty()
    }

    /// The earliest `wake` of any row.
    pub fn next_wake(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// IDs of rows whose `wake` is at or before `now`, earliest first.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// IDs of the live rows of `group`, in ID order.
    pub fn group(&self, group: &str) -> Vec<String> {
        if group.is_empty() {
            return Vec::new();
        }
        self.groups
            .range((group.to_owned(), String::new())..)
            .take_while(|(g, _)| g == group)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The live rows of `group`, in ID order.
    pub fn group_rows(&self, group: &str) -> Vec<(&String, &T)> {
        self.group(group)
            .iter()
            .filter_map(|id| self.rows.get_key_value(id.as_str()))
            .collect()
    }

    /// Every index recomputed from the rows equals the one kept (tests).
    pub fn consistent(&self) -> bool {
        let mut fresh = Table::<T>::default();
        for (id, row) in &self.rows {
            fresh.index(id, &Marks::of(row));
        }
        fresh.dirty == self.dirty
            && fresh.live == self.live
            && fresh.timers == self.timers
            && fresh.groups == self.groups
    }
}

/// A row being changed; re-indexed on drop.
pub(super) struct RowMut<'a, T: Row> {
    table: &'a mut Table<T>,
    id: String,
    before: Marks,
}

impl<T: Row> Deref for RowMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.table.rows.get(&self.id).expect("held by the guard")
    }
}

impl<T: Row> DerefMut for RowMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.table
            .rows
            .get_mut(&self.id)
            .expect("held by the guard")
    }
}

impl<T: Row> Drop for RowMut<'_, T> {
    fn drop(&mut self) {
        let Some(row) = self.table.rows.get(&self.id) else {
            return;
        };
        let after = Marks::of(row);
        if after != self.before {
            let id = std::mem::take(&mut self.id);
            self.table.unindex(&id, &self.before);
            self.table.index(&id, &after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default)]
    struct R {
        in_sync: bool,
        deleted: bool,
        wake: Option<Instant>,
        group: String,
    }

    impl Row for R {
        fn in_sync(&self) -> bool {
            self.in_sync
        }
        fn deleted(&self) -> bool {
            self.deleted
        }
        fn wake(&self) -> Option<Instant> {
            self.wake
        }
        fn group(&self) -> &str {
            &self.group
        }
    }

    #[test]
    fn indexes_follow_every_kind_of_change() {
        let mut t = Table::default();
        for i in 0..20u64 {
            t.insert(
                format!("r{i:02}"),
                R {
                    in_sync: i % 3 == 0,
                    deleted: i % 5 == 0,
                    wake: (i % 2 == 0).then_some(Instant(100 - i)),
                    group: if i % 4 == 0 {
                        "g".into()
                    } else {
                        String::new()
                    },
                },
            );
        }
        assert!(t.consistent());
        assert_eq!(t.live(), 16);
        assert_eq!(t.first_dirty().unwrap().0, "r01");
        assert_eq!(t.next_wake(), Some(Instant(82)));
        assert_eq!(t.due(Instant(85)), vec!["r18", "r16"]);
        assert_eq!(t.group("g"), vec!["r04", "r08", "r12", "r16"]);
        // Through the guard.
        {
            let mut r = t.get_mut("r01").unwrap();
            r.in_sync = true;
            r.wake = Some(Instant(1));
            r.group = "g".into();
        }
        assert!(t.consistent());
        assert_eq!(t.first_dirty().unwrap().0, "r02");
        assert_eq!(t.next_wake(), Some(Instant(1)));
        assert_eq!(t.group("g")[0], "r01");
        t.get_mut("r04").unwrap().deleted = true;
        assert!(t.consistent());
        assert!(!t.group("g").contains(&"r04".to_owned()));
        // Replaced, removed, retained, updated wholesale.
        t.insert("r02".into(), R::default());
        t.remove("r03");
        t.retain(|id, _| id != "r05");
        assert!(t.consistent());
        t.update_all(|_, r| {
            r.in_sync = true;
            r.wake = None;
        });
        assert!(t.consistent());
        assert!(t.all_in_sync());
        assert_eq!(t.next_wake(), None);
        assert!(t.due(Instant(u64::MAX)).is_empty());
    }
}
