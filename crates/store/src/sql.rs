//! Helpers shared by the repositories: column decoding into domain types, JSON columns, and a
//! tiny filter builder that only ever concatenates `'static` SQL fragments — values always
//! travel as bound parameters.

use std::borrow::Cow;
use std::str::FromStr;

use aether_domain::{Timestamp, Usd};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{Arg, Exec, Row};
use crate::error::{Result, StoreError};

pub(crate) fn parse<T: FromStr>(r: &Row, col: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = r.text(col)?;
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("column `{col}` value `{s}`: {e}")))
}

pub(crate) fn opt_parse<T: FromStr>(r: &Row, col: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    r.opt_text(col)?
        .map(|s| {
            s.parse()
                .map_err(|e| StoreError::Corrupt(format!("column `{col}` value `{s}`: {e}")))
        })
        .transpose()
}

pub(crate) fn ts(r: &Row, col: &str) -> Result<Timestamp> {
    r.i64(col).map(Timestamp)
}

pub(crate) fn opt_ts(r: &Row, col: &str) -> Result<Option<Timestamp>> {
    Ok(r.opt_i64(col)?.map(Timestamp))
}

pub(crate) fn usd(r: &Row, col: &str) -> Result<Usd> {
    r.i64(col).map(Usd::from_nanos)
}

pub(crate) fn opt_usd(r: &Row, col: &str) -> Result<Option<Usd>> {
    Ok(r.opt_i64(col)?.map(Usd::from_nanos))
}

pub(crate) fn u32_(r: &Row, col: &str) -> Result<u32> {
    let v = r.i64(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column `{col}`: {v} out of range")))
}

pub(crate) fn opt_u32(r: &Row, col: &str) -> Result<Option<u32>> {
    r.opt_i64(col)?
        .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column `{col}`: {v}"))))
        .transpose()
}

pub(crate) fn i32_(r: &Row, col: &str) -> Result<i32> {
    let v = r.i64(col)?;
    i32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column `{col}`: {v} out of range")))
}

pub(crate) fn opt_i32(r: &Row, col: &str) -> Result<Option<i32>> {
    r.opt_i64(col)?
        .map(|v| i32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column `{col}`: {v}"))))
        .transpose()
}

pub(crate) fn json<T: DeserializeOwned>(r: &Row, col: &str) -> Result<T> {
    let s = r.text(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("column `{col}`: {e}")))
}

pub(crate) fn opt_json<T: DeserializeOwned>(r: &Row, col: &str) -> Result<Option<T>> {
    r.opt_text(col)?
        .map(|s| {
            serde_json::from_str(&s)
                .map_err(|e| StoreError::Corrupt(format!("column `{col}`: {e}")))
        })
        .transpose()
}

/// Serializes a JSON column value.
pub(crate) fn j<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

pub(crate) fn oj<T: Serialize>(v: Option<&T>) -> Option<String> {
    v.map(|v| j(v))
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern and wraps it in `%…%`.
pub(crate) fn like_pattern(term: &str) -> String {
    let mut s = String::with_capacity(term.len() + 2);
    s.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('%');
    s
}

/// A page request. `limit` is clamped to 1..=1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            limit: 100,
            offset: 0,
        }
    }
}

impl Page {
    #[must_use]
    pub fn new(limit: u32, offset: u32) -> Self {
        Self {
            limit: limit.clamp(1, 1000),
            offset,
        }
    }

    #[must_use]
    pub fn all() -> Self {
        Self {
            limit: u32::MAX,
            offset: 0,
        }
    }
}

/// One page of results and the total count across pages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// Rows matching the filter; only a lower bound when `total_capped` is set.
    pub total: i64,
    /// Counting stopped at [`COUNT_AHEAD`] rows past the page (tables that grow to millions of
    /// rows: usage records, the audit log); at least `total` rows match.
    pub total_capped: bool,
}

/// How a page counts the rows matching its filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Every match (tables that stay small: users, keys, providers, models…).
    Exact,
    /// At most [`COUNT_AHEAD`] rows past the end of the page (tables that grow without bound).
    Ahead,
}

impl Paged<Row> {
    /// Decodes every row of the page.
    pub(crate) fn decode<T>(self, f: impl Fn(&Row) -> Result<T>) -> Result<Paged<T>> {
        Ok(Paged {
            items: self.items.iter().map(f).collect::<Result<_>>()?,
            total: self.total,
            total_capped: self.total_capped,
        })
    }
}

/// How many rows past the end of the requested page a capped count looks for. Counting every
/// match of a filter over millions of rows costs a full scan (hundreds of milliseconds at five
/// million usage records); a pager needs only to know that more pages follow.
pub const COUNT_AHEAD: u32 = 1000;

/// `WHERE` clauses assembled from static templates; `{}` in a template becomes the bound
/// parameter's placeholder (every occurrence refers to the same parameter).
#[derive(Debug, Default)]
pub(crate) struct Filter {
    clauses: Vec<String>,
    pub(crate) args: Vec<Arg>,
}

impl Filter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn cond(&mut self, template: &'static str, v: impl Into<Arg>) -> &mut Self {
        self.args.push(v.into());
        let ph = format!("${}", self.args.len());
        self.clauses.push(template.replace("{}", &ph));
        self
    }

    /// A clause without a parameter.
    pub(crate) fn raw(&mut self, clause: &'static str) -> &mut Self {
        self.clauses.push(clause.to_string());
        self
    }

    fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// Runs `SELECT <cols> FROM <from> WHERE … ORDER BY … LIMIT … OFFSET …` and the matching
    /// count, exact or capped ([`Count`]).
    pub(crate) async fn page<E: Exec>(
        self,
        ex: &mut E,
        select: &'static str,
        from: &'static str,
        order_by: &'static str,
        page: Page,
        count: Count,
    ) -> Result<Paged<Row>> {
        let cap = match count {
            Count::Exact => None,
            Count::Ahead => Some(
                i64::from(page.offset)
                    .saturating_add(i64::from(page.limit))
                    .saturating_add(i64::from(COUNT_AHEAD)),
            ),
        };
        let w = self.where_sql();
        let (count_sql, count_args) = match cap {
            None => (
                format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {from}{w}"),
                self.args.clone(),
            ),
            Some(cap) => {
                // One row past the cap tells "exactly cap" from "more than cap".
                let mut a = self.args.clone();
                a.push(Arg::Int(Some(cap.saturating_add(1))));
                (
                    format!(
                        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM (SELECT 1 AS one FROM {from}{w} LIMIT ${}) capped",
                        a.len()
                    ),
                    a,
                )
            }
        };
        let counted = ex
            .fetch_optional(Cow::Owned(count_sql), count_args)
            .await?
            .map_or(Ok(0), |r| r.i64("n"))?;
        let (total, capped) = match cap {
            Some(cap) if counted > cap => (cap, true),
            _ => (counted, false),
        };
        let n = self.args.len();
        let mut args = self.args;
        let limit = i64::from(page.limit.min(i32::MAX as u32));
        args.push(Arg::Int(Some(limit)));
        args.push(Arg::Int(Some(i64::from(page.offset))));
        let sql = format!(
            "SELECT {select} FROM {from}{w} ORDER BY {order_by} LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let items = ex.fetch_all(Cow::Owned(sql), args).await?;
        Ok(Paged {
            items,
            total,
            total_capped: capped,
        })
    }

    /// Runs `SELECT <cols> FROM <from> WHERE … ORDER BY …` without paging.
    pub(crate) async fn all<E: Exec>(
        self,
        ex: &mut E,
        select: &'static str,
        from: &'static str,
        order_by: &'static str,
    ) -> Result<Vec<Row>> {
        let sql = format!(
            "SELECT {select} FROM {from}{} ORDER BY {order_by}",
            self.where_sql()
        );
        ex.fetch_all(Cow::Owned(sql), self.args).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("A_b%"), "%a\\_b\\%%");
    }

    #[test]
    fn filter_numbers_placeholders_in_order() {
        let mut f = Filter::new();
        f.cond("a = {}", 1i64).cond("(b LIKE {} OR c LIKE {})", "x");
        assert_eq!(f.where_sql(), " WHERE a = $1 AND (b LIKE $2 OR c LIKE $2)");
    }
}
