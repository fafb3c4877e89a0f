//! Reading `application/x-www-form-urlencoded` bodies, with the refusals a
//! person can understand: too large (413), not a form (400).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

/// A form's fields, in order. A name may repeat.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FormData(pub Vec<(String, String)>);

/// Why a body is not a form we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormError {
    /// Over [`super::MAX_FORM_BYTES`].
    TooLarge,
    /// Not UTF-8, a bad percent escape, or the body could not be read.
    Malformed,
}

impl FormError {
    pub fn status(self) -> StatusCode {
        match self {
            FormError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            FormError::Malformed => StatusCode::BAD_REQUEST,
        }
    }

    /// The i18n key of the message for the person.
    pub fn message_key(self) -> &'static str {
        match self {
            FormError::TooLarge => "error_too_large",
            FormError::Malformed => "error_malformed",
        }
    }
}

impl FormData {
    /// Reads a body taken as `Result<Bytes, BytesRejection>` (so the size
    /// limit's refusal comes here instead of axum's plain text).
    pub fn from_body(body: Result<Bytes, BytesRejection>) -> Result<FormData, FormError> {
        match body {
            Ok(b) => FormData::parse(&b),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(FormError::TooLarge),
            Err(_) => Err(FormError::Malformed),
        }
    }

    pub fn parse(body: &[u8]) -> Result<FormData, FormError> {
        if body.len() > super::MAX_FORM_BYTES {
            return Err(FormError::TooLarge);
        }
        let mut out = Vec::new();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let name = decode(it.next().unwrap_or_default())?;
            let value = decode(it.next().unwrap_or_default())?;
            out.push((name, value));
        }
        Ok(FormData(out))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn decode(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(FormError::Malformed)?;
                let s = std::str::from_utf8(hex).map_err(|_| FormError::Malformed)?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| FormError::Malformed)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_decoded_with_plus_and_percent_escapes() {
        let f = FormData::parse(b"note=found+on+floor%2C+ok&cause=false&x=%C3%A6").unwrap();
        assert_eq!(f.get("note"), Some("found on floor, ok"));
        assert_eq!(f.get("cause"), Some("false"));
        assert_eq!(f.get("x"), Some("æ"));
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn bad_escapes_and_bad_utf8_are_malformed() {
        assert_eq!(FormData::parse(b"a=%zz"), Err(FormError::Malformed));
        assert_eq!(FormData::parse(b"a=%C3"), Err(FormError::Malformed));
        assert_eq!(FormData::parse(b"a=%4"), Err(FormError::Malformed));
    }

    #[test]
    fn an_oversized_body_is_too_large() {
        let big = vec![b'a'; super::super::MAX_FORM_BYTES + 1];
        assert_eq!(FormData::parse(&big), Err(FormError::TooLarge));
    }
}
