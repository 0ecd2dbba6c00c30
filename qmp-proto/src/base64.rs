//! Base64 (RFC 4648, standard alphabet, `=` padding, no line breaks), as GLib's
//! `g_base64_encode` writes it: the encoding of the guest agent's file contents and process
//! I/O, and of qtest's `b64read`/`b64write`. Small enough not to need a dependency.
//!
//! Decoding is strict: one text per byte string (padding required, no whitespace, no bits set
//! under the padding), and an error says where the text went wrong.

use std::fmt;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Each byte's value in the alphabet, or `INVALID`.
const INVALID: u8 = 0xFF;
static DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The length of the base64 text of `n` bytes, padding included; `None` on overflow.
pub fn encoded_len(n: usize) -> Option<usize> {
    n.div_ceil(3).checked_mul(4)
}

/// The base64 text of `bytes`: standard alphabet, padded with `=`, no line breaks.
///
/// ```
/// assert_eq!(qmp_proto::base64::encode(b"qemu"), "cWVtdQ==");
/// ```
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    encode_into(bytes, &mut out);
    out
}

/// Appends the base64 text of `bytes` to `out` (see [`encode`]).
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(encoded_len(bytes.len()).unwrap_or(0));
    let mut chunks = bytes.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[(n >> shift & 63) as usize] as char);
        }
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.push(ALPHABET[(n >> 18 & 63) as usize] as char);
            out.push(ALPHABET[(n >> 12 & 63) as usize] as char);
            out.push_str("==");
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.push(ALPHABET[(n >> 18 & 63) as usize] as char);
            out.push(ALPHABET[(n >> 12 & 63) as usize] as char);
            out.push(ALPHABET[(n >> 6 & 63) as usize] as char);
            out.push('=');
        }
        _ => {}
    }
}

/// Text that is not valid base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Error {
    /// The offset of the first byte that is wrong (or the text's length when it is cut short).
    pub offset: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

impl fmt::Display for Base64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid base64 at offset {}: {}",
            self.offset, self.reason
        )
    }
}

impl std::error::Error for Base64Error {}

/// Decodes base64 text (standard alphabet, padded: what qemu-ga writes).
///
/// Refuses, with the offset, a byte outside the alphabet, a length that is not a multiple of
/// four, padding anywhere but at the end, and padding that leaves bits set.
///
/// ```
/// use qmp_proto::base64::decode;
/// assert_eq!(decode("cWVtdQ==").unwrap(), b"qemu");
/// assert_eq!(decode("cWVtdQ=").unwrap_err().offset, 7);
/// ```
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let mut out = Vec::new();
    decode_into(text, &mut out)?;
    Ok(out)
}

/// Appends the bytes that base64 `text` encodes to `out` (see [`decode`]). On error,
/// `out` holds what was decoded before the bad quantum.
pub fn decode_into(text: &str, out: &mut Vec<u8>) -> Result<(), Base64Error> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return Err(Base64Error {
            offset: bytes.len(),
            reason: "the text's length is not a multiple of 4 (cut short, or padding missing)",
        });
    }
    out.reserve(bytes.len() / 4 * 3);
    let quanta = bytes.len() / 4;
    for (q, c) in bytes.chunks_exact(4).enumerate() {
        let at = q * 4;
        let last = q + 1 == quanta;
        let pad = if last {
            c.iter().rev().take_while(|&&b| b == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return Err(Base64Error {
                offset: at + 4 - pad,
                reason: "more than two padding characters",
            });
        }
        let mut n: u32 = 0;
        for (i, &b) in c[..4 - pad].iter().enumerate() {
            let v = DECODE[b as usize];
            if v == INVALID {
                return Err(Base64Error {
                    offset: at + i,
                    reason: if b == b'=' {
                        "padding before the end"
                    } else {
                        "a byte outside the base64 alphabet"
                    },
                });
            }
            n |= u32::from(v) << (18 - 6 * i);
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // The bits under the padding must be zero (one encoding per byte string).
        if decoded[keep..].iter().any(|&b| b != 0) {
            return Err(Base64Error {
                offset: at + 3 - pad,
                reason: "padding leaves bits set (not canonical base64)",
            });
        }
        out.extend_from_slice(&decoded[..keep]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        let vectors: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode(plain), encoded);
            assert_eq!(decode(encoded).unwrap(), plain);
        }
    }

    #[test]
    fn base64_round_trips_every_byte_and_length() {
        let all: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for len in 0..300 {
            let text = encode(&all[..len]);
            assert_eq!(text.len(), len.div_ceil(3) * 4);
            assert_eq!(decode(&text).unwrap(), &all[..len]);
        }
        let mut into = b"keep".to_vec();
        decode_into("AQID", &mut into).unwrap();
        assert_eq!(into, b"keep\x01\x02\x03");
    }

    #[test]
    fn base64_refuses_what_is_not_base64() {
        let err = |t: &str| decode(t).unwrap_err();
        assert_eq!(err("Zm9").offset, 3);
        assert!(err("Zm9").reason.contains("multiple of 4"));
        assert_eq!(err("Zm9v-mFy").offset, 4);
        assert!(err("Zm9v-mFy").reason.contains("alphabet"));
        assert_eq!(err("Zg==Zm9v").offset, 2);
        assert!(err("Zg==Zm9v").reason.contains("padding before the end"));
        assert_eq!(err("Z===").offset, 1);
        assert_eq!(err("Zh==").offset, 1);
        assert!(err("Zh==").reason.contains("bits set"));
        assert_eq!(err("Zm9=").offset, 2);
        assert!(err("Zm9v\n").reason.contains("multiple of 4"));
        assert!(err("Zm 9").reason.contains("alphabet"));
        assert_eq!(
            err("Zm9v-mFy").to_string(),
            "invalid base64 at offset 4: a byte outside the base64 alphabet"
        );
    }

    /// RFC 4648, section 10.
    const VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc_4648_vectors() {
        for (plain, encoded) in VECTORS {
            assert_eq!(encode(plain.as_bytes()), encoded, "{plain:?}");
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes(), "{encoded:?}");
            assert_eq!(encoded_len(plain.len()), Some(encoded.len()));
        }
    }

    #[test]
    fn every_byte_value_and_length_round_trips() {
        let all: Vec<u8> = (0..=255u8).collect();
        // The 8 bytes QEMU wrote for `b64read` after `writeq 0x1122334455667788`.
        assert_eq!(
            decode("iHdmVUQzIhE=").unwrap(),
            0x1122334455667788u64.to_le_bytes()
        );
        assert_eq!(encode(&all[..3]), "AAEC");
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
        for len in 0..all.len() {
            let text = encode(&all[..len]);
            assert_eq!(decode(&text).unwrap(), &all[..len]);
            // Padding is required: GLib always writes it.
            if text.ends_with('=') {
                assert!(decode(text.trim_end_matches('=')).is_err(), "{text:?}");
            }
        }
    }

    #[test]
    fn rejects_what_is_not_base64() {
        for bad in [
            "Zg=", "Z", "Zm9vY", "Zm9v!A==", "Zm 9v", "Zh==", "Zm9=", "=", "Zg==Zg==",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            decode("Zm-v").unwrap_err().to_string(),
            "invalid base64 at offset 2: a byte outside the base64 alphabet"
        );
    }
}
