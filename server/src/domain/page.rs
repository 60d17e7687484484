//! Keyset pagination: a page is "the next N rows after this key" (or before it), never an
//! offset, so pages stay stable while rows are added and cost the same however deep they go.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The first rows after the cursor (`first`/`after`).
    Forward,
    /// The last rows before the cursor (`last`/`before`).
    Backward,
}

#[derive(Debug, Clone)]
pub struct PageRequest<K> {
    pub after: Option<K>,
    pub before: Option<K>,
    pub limit: u64,
    pub direction: Direction,
}

impl<K> PageRequest<K> {
    pub fn map<L>(self, f: impl Fn(K) -> L) -> PageRequest<L> {
        PageRequest {
            after: self.after.map(&f),
            before: self.before.map(&f),
            limit: self.limit,
            direction: self.direction,
        }
    }
}

/// Rows in the list's own order, and whether more lie beyond them in the direction read.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows read in the direction of travel.
    pub fn from_rows(mut rows: Vec<T>, limit: u64, direction: Direction) -> Self {
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        if direction == Direction::Backward {
            rows.reverse();
        }
        Self { items: rows, has_more }
    }

    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page { items: self.items.into_iter().map(f).collect::<Result<_, _>>()?, has_more: self.has_more })
    }
}
