//! Who is on the other end of an mTLS connection: the names in the client certificate that
//! rustls verified against `client_ca_file` (its subject's common name and its subject
//! alternative names: DNS, URI, e-mail). The auth guard lets a tokens-file entry with
//! `client_cert: <name>` stand for the connection, so a collector needs no bearer token.
//!
//! Only the few DER structures on the path to those names are read, by a small reader that
//! returns `None` on anything malformed; the certificate's trust was decided by rustls already.

use std::sync::Arc;

/// Put in every request's extensions on a connection whose client presented a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNames(pub Arc<Vec<String>>);

impl PeerNames {
    /// The names of a verified leaf certificate, common name first; `None` when it has none
    /// or does not parse.
    pub fn from_der(cert: &[u8]) -> Option<PeerNames> {
        let names = names(cert)?;
        (!names.is_empty()).then(|| PeerNames(Arc::new(names)))
    }
}

/// One DER element at a time.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            (rest[..n].iter().fold(0usize, |acc, b| acc << 8 | *b as usize), &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        self.0 = &rest[len..];
        Some((tag, &rest[..len]))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, body) if t == tag => Some(body),
            _ => None,
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTETS: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
/// id-at-commonName, 2.5.4.3.
const CN: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const SAN: &[u8] = &[0x55, 0x1d, 0x11];

fn names(cert: &[u8]) -> Option<Vec<String>> {
    let cert = Der(cert).expect(SEQUENCE)?;
    let mut tbs = Der(Der(cert).expect(SEQUENCE)?);
    let mut field = tbs.next()?;
    if field.0 == 0xa0 {
        field = tbs.next()?; // the version was explicit; this is the serial number
    }
    let _serial = field;
    let _signature = tbs.expect(SEQUENCE)?;
    let _issuer = tbs.expect(SEQUENCE)?;
    let _validity = tbs.expect(SEQUENCE)?;
    let subject = tbs.expect(SEQUENCE)?;
    let _key = tbs.expect(SEQUENCE)?;
    let mut out = Vec::new();
    let mut rdns = Der(subject);
    while let Some(set) = rdns.expect(SET) {
        let mut atvs = Der(set);
        while let Some(atv) = atvs.expect(SEQUENCE) {
            let mut atv = Der(atv);
            if atv.expect(OID)? == CN
                && let Some((_, value)) = atv.next()
            {
                out.push(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    while let Some((tag, body)) = tbs.next() {
        if tag != 0xa3 {
            continue; // issuer or subject unique IDs
        }
        let mut exts = Der(Der(body).expect(SEQUENCE)?);
        while let Some(ext) = exts.expect(SEQUENCE) {
            let mut ext = Der(ext);
            if ext.expect(OID)? != SAN {
                continue;
            }
            let mut value = ext.next()?;
            if value.0 == BOOLEAN {
                value = ext.next()?;
            }
            if value.0 != OCTETS {
                return None;
            }
            let mut general = Der(Der(value.1).expect(SEQUENCE)?);
            while let Some((tag, name)) = general.next() {
                // rfc822Name [1], dNSName [2], uniformResourceIdentifier [6]: IA5 strings.
                if matches!(tag, 0x81 | 0x82 | 0x86) {
                    out.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_no_name() {
        assert_eq!(PeerNames::from_der(&[]), None);
        assert_eq!(PeerNames::from_der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(PeerNames::from_der(&[0x30, 0x02, 0x30, 0x00]), None);
    }
}
