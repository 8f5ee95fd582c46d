//! Tenant resolution and validation. A tenant ID becomes part of storage paths, so it is
//! checked here before it goes anywhere else.

use axum::http::HeaderMap;

use crate::error::Error;

pub const SINGLE_TENANT: &str = "single-tenant";
pub const HEADER: &str = "x-scope-orgid";
const MAX_LEN: usize = 150;

/// Checks one tenant ID: 1–150 bytes of `[A-Za-z0-9]` and `! - _ . * ' ( )`, not `.` or `..`.
pub fn validate(id: &str) -> Result<(), Error> {
    let bad = |why: String| Err(Error::unauthenticated(format!("invalid tenant ID {id:?}: {why}")));
    if id.is_empty() {
        return bad("empty".into());
    }
    if id.len() > MAX_LEN {
        return bad(format!("longer than {MAX_LEN} bytes"));
    }
    if id == "." || id == ".." {
        return bad("not allowed".into());
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c))) {
        return bad(format!("character {c:?} is not allowed"));
    }
    Ok(())
}

/// The tenant a write belongs to.
pub fn for_write(headers: &HeaderMap, multitenancy: bool) -> Result<String, Error> {
    if !multitenancy {
        return Ok(SINGLE_TENANT.into());
    }
    let id = header(headers)?;
    validate(&id)?;
    Ok(id)
}

/// The tenants a read covers: `a|b` federates, sorted and de-duplicated.
pub fn for_read(headers: &HeaderMap, multitenancy: bool) -> Result<Vec<String>, Error> {
    if !multitenancy {
        return Ok(vec![SINGLE_TENANT.into()]);
    }
    let raw = header(headers)?;
    let mut ids: Vec<String> = raw.split('|').map(str::to_owned).collect();
    for id in &ids {
        validate(id)?;
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn header(headers: &HeaderMap) -> Result<String, Error> {
    let value = headers.get(HEADER).ok_or_else(|| {
        Error::unauthenticated("no org id: multi-tenancy is enabled and the X-Scope-OrgID header is missing")
    })?;
    value
        .to_str()
        .map(|s| s.trim().to_owned())
        .map_err(|_| Error::unauthenticated("invalid tenant ID: X-Scope-OrgID is not ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_tricks_and_odd_characters() {
        for bad in ["", ".", "..", "../x", "a/b", "a|b", "é", &"x".repeat(151), "a b"] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "team-1", "A_b.c*('!')", &"x".repeat(150), "..."] {
            assert!(validate(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn reads_federate() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, "b|a|b".parse().unwrap());
        assert_eq!(for_read(&h, true).unwrap(), vec!["a", "b"]);
        assert!(for_write(&h, true).is_err());
        assert_eq!(for_write(&h, false).unwrap(), SINGLE_TENANT);
        assert!(for_read(&HeaderMap::new(), true).unwrap_err().to_string().contains("no org id"));
    }
}
