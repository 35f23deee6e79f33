//! Query strings read by hand, so that every mistake gets the service's error shape: an
//! empty parameter counts as absent, a repeated one is refused, unknown ones are ignored.

use std::collections::HashMap;

use crate::error::{Error, Result};

pub struct Query {
    values: HashMap<&'static str, String>,
}

impl Query {
    /// Reads the parameters named in `known` from a raw query string.
    pub fn parse(query: Option<&str>, known: &[&'static str]) -> Result<Query> {
        let mut values = HashMap::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let Some(name) = known.iter().find(|k| **k == name) else {
                continue;
            };
            if values.contains_key(name) {
                return Err(Error::invalid(format!("{name} is given more than once")));
            }
            if !value.is_empty() {
                values.insert(*name, value.into_owned());
            }
        }
        Ok(Query { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// An integer of at least `min`, if given.
    pub fn integer(&self, name: &str, min: i64) -> Result<Option<i64>> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n >= min).ok_or_else(|| {
                    Error::invalid(format!("{name} must be an integer of at least {min}"))
                })
            })
            .transpose()
    }

    /// A page size from 1 to `max`; `default` when not given.
    pub fn limit(&self, name: &str, default: i64, max: i64) -> Result<i64> {
        match self.get(name) {
            None => Ok(default),
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=max).contains(l))
                .ok_or_else(|| {
                    Error::invalid(format!("{name} must be an integer from 1 to {max}"))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_and_checked() {
        let q = Query::parse(
            Some("limit=5&after=3&x=1&before="),
            &["limit", "after", "before"],
        )
        .unwrap();
        assert_eq!(q.limit("limit", 50, 200).unwrap(), 5);
        assert_eq!(q.integer("after", 0).unwrap(), Some(3));
        assert_eq!(q.integer("before", 0).unwrap(), None);
        assert!(Query::parse(Some("limit=1&limit=2"), &["limit"]).is_err());
        let q = Query::parse(Some("limit=201&after=-1"), &["limit", "after"]).unwrap();
        assert!(q.limit("limit", 50, 200).is_err());
        assert!(q.integer("after", 0).is_err());
    }
}
