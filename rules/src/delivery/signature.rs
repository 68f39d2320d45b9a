//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): what a receiver checks
//! to know a request came from us, unaltered, and recently.
//!
//! A secret is `whsec_` followed by the base64 of its key bytes.  A request's signature is
//! `v1,` and the base64 of HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>"); while
//! a rotation overlaps, the `webhook-signature` header carries one such signature per secret,
//! separated by spaces.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key lengths (bytes) a secret may have: at least 192 bits, as Standard Webhooks requires.
pub const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// The key length of a secret pg_jobqueue makes.
pub const NEW_KEY_BYTES: usize = 32;

/// A secret's key bytes, or why the text is not a secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.strip_prefix(SECRET_PREFIX) else {
        return Err(format!(
            "a webhook secret starts with \"{SECRET_PREFIX}\" followed by base64"
        ));
    };
    let key = BASE64.decode(encoded).map_err(|_| {
        format!("a webhook secret is \"{SECRET_PREFIX}\" followed by base64, which this is not")
    })?;
    if !KEY_BYTES.contains(&key.len()) {
        return Err(format!(
            "a webhook secret's key must be {} to {} bytes, this one has {}",
            KEY_BYTES.start(),
            KEY_BYTES.end(),
            key.len()
        ));
    }
    Ok(key)
}

/// The secret text of key bytes.
pub fn secret_text(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", BASE64.encode(key))
}

fn mac(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// One `v1,<base64>` signature.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, msg_id, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v1,{}", BASE64.encode(tag))
}

/// The `webhook-signature` header: one signature per key, space-separated.
pub fn signature_header(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| sign(key, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether one of the header's `v1` signatures is that of `key` (compared in constant time),
/// and `timestamp` is within `tolerance_secs` of `now` (either way).
pub fn verify(
    key: &[u8],
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> bool {
    let Ok(sent_at) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if now.abs_diff(sent_at) > tolerance_secs.max(0) as u64 {
        return false;
    }
    header.split_whitespace().any(|signature| {
        let Some(("v1", encoded)) = signature.split_once(',') else {
            return false;
        };
        let Ok(tag) = BASE64.decode(encoded) else {
            return false;
        };
        mac(key, msg_id, timestamp.trim(), body)
            .verify_slice(&tag)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification (its reference libraries' test).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specification_example() {
        let key = secret_key(SPEC_SECRET).unwrap();
        assert_eq!(sign(&key, SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_any_of_several_signatures_within_tolerance() {
        let key = secret_key(SPEC_SECRET).unwrap();
        let other = vec![7u8; 32];
        let header = signature_header(&[other.clone(), key.clone()], SPEC_ID, SPEC_TS, SPEC_BODY);
        assert_eq!(header.split(' ').count(), 2);
        let ts = SPEC_TS.to_string();
        assert!(verify(
            &key,
            SPEC_ID,
            &ts,
            SPEC_BODY,
            &header,
            SPEC_TS + 299,
            300
        ));
        assert!(verify(
            &other,
            SPEC_ID,
            &ts,
            SPEC_BODY,
            &header,
            SPEC_TS - 299,
            300
        ));
        // Too old, too new, another body, another id, a v2 prefix, garbage.
        assert!(!verify(
            &key,
            SPEC_ID,
            &ts,
            SPEC_BODY,
            &header,
            SPEC_TS + 301,
            300
        ));
        assert!(!verify(
            &key,
            SPEC_ID,
            &ts,
            SPEC_BODY,
            &header,
            SPEC_TS - 301,
            300
        ));
        assert!(!verify(&key, SPEC_ID, &ts, b"{}", &header, SPEC_TS, 300));
        assert!(!verify(
            &key,
            "msg_other",
            &ts,
            SPEC_BODY,
            &header,
            SPEC_TS,
            300
        ));
        let v2 = SPEC_SIGNATURE.replacen("v1", "v2", 1);
        assert!(!verify(&key, SPEC_ID, &ts, SPEC_BODY, &v2, SPEC_TS, 300));
        assert!(!verify(
            &key,
            SPEC_ID,
            "soon",
            SPEC_BODY,
            SPEC_SIGNATURE,
            SPEC_TS,
            300
        ));
        assert!(!verify(
            &key, SPEC_ID, &ts, SPEC_BODY, "v1,%%%", SPEC_TS, 300
        ));
    }

    #[test]
    fn refuses_texts_that_are_not_secrets() {
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_err()
            .contains("whsec_"));
        assert!(secret_key("whsec_!!!").unwrap_err().contains("base64"));
        let short = secret_text(&[1u8; 16]);
        assert!(secret_key(&short).unwrap_err().contains("16"));
        let long = secret_text(&[1u8; 65]);
        assert!(secret_key(&long).is_err());
        let ok = secret_text(&[9u8; 24]);
        assert_eq!(secret_key(&ok).unwrap(), vec![9u8; 24]);
    }
}
