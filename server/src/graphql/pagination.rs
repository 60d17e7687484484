//! Relay connections over the store's keyset pages. Cursors are opaque (base64 JSON of the row's
//! sort key), so clients cannot build them and the server can change their contents later.

use async_graphql::{
    OutputType,
    connection::{Connection, CursorType, Edge, OpaqueCursor},
};
use serde::{Serialize, de::DeserializeOwned};

use super::error::{GqlError, GqlResult};
use crate::domain::page::{Direction, Page, PageRequest};

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

/// The four Relay arguments as the caller sent them.
pub struct PageArgs {
    pub after: Option<String>,
    pub before: Option<String>,
    pub first: Option<i32>,
    pub last: Option<i32>,
}

pub fn page_request<K: Serialize + DeserializeOwned + Send + Sync>(args: PageArgs) -> GqlResult<PageRequest<K>> {
    let decode = |field: &str, cursor: Option<String>| -> GqlResult<Option<K>> {
        cursor
            .map(|raw| {
                OpaqueCursor::<K>::decode_cursor(&raw)
                    .map(|cursor| cursor.0)
                    .map_err(|_| GqlError::bad_input(field, "is not a cursor of this list"))
            })
            .transpose()
    };
    let size = |field: &str, count: i32| -> GqlResult<u64> {
        match u64::try_from(count) {
            Ok(count) if (1..=MAX_PAGE_SIZE).contains(&count) => Ok(count),
            _ => Err(GqlError::bad_input(field, format!("must be between 1 and {MAX_PAGE_SIZE}"))),
        }
    };
    let (limit, direction) = match (args.first, args.last) {
        (Some(_), Some(_)) => return Err(GqlError::bad_input("last", "cannot be combined with first")),
        (Some(first), None) => (size("first", first)?, Direction::Forward),
        (None, Some(last)) => (size("last", last)?, Direction::Backward),
        (None, None) => (DEFAULT_PAGE_SIZE, Direction::Forward),
    };
    Ok(PageRequest { after: decode("after", args.after)?, before: decode("before", args.before)?, limit, direction })
}

/// Turns a page into a connection; `key` gives each row's cursor value.
pub fn connection<T, K, N>(
    page: Page<T>,
    request: &PageRequest<K>,
    key: impl Fn(&T) -> K,
    node: impl Fn(T) -> N,
) -> Connection<OpaqueCursor<K>, N>
where
    K: Serialize + DeserializeOwned + Send + Sync,
    N: OutputType,
{
    let (has_previous, has_next) = match request.direction {
        Direction::Forward => (request.after.is_some(), page.has_more),
        Direction::Backward => (page.has_more, request.before.is_some()),
    };
    let mut connection = Connection::new(has_previous, has_next);
    connection.edges.extend(page.items.into_iter().map(|item| Edge::new(OpaqueCursor(key(&item)), node(item))));
    connection
}
