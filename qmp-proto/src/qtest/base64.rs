//! Base64 (RFC 4648, standard alphabet, `=` padding), as GLib's `g_base64_encode` writes it
//! and `g_base64_decode` reads it: small enough not to need a dependency.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The length of the base64 encoding of `n` bytes, padding included, or `None` on overflow.
pub(crate) fn encoded_len(n: usize) -> Option<usize> {
    n.div_ceil(3).checked_mul(4)
}

/// Appends the padded base64 encoding of `data` to `out`.
pub(crate) fn encode_into(data: &[u8], out: &mut String) {
    out.reserve(encoded_len(data.len()).unwrap_or(0));
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
}

/// The padded base64 encoding of `data`.
#[cfg(test)]
pub(crate) fn encode(data: &[u8]) -> String {
    let mut out = String::new();
    encode_into(data, &mut out);
    out
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes base64 text. Padding is optional, but where present it must be complete (the
/// text then is a multiple of 4 long); whitespace and characters outside the alphabet are
/// errors, and so are bits set in the unused end of the last character.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let data = match bytes {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => {
            if bytes.len() % 4 != 0 {
                return Err("incomplete base64 padding".into());
            }
            rest
        }
        _ => bytes,
    };
    if data.len() % 4 == 1 {
        return Err(format!(
            "{} base64 characters cannot be whole bytes",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for chunk in data.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v =
                value(c).ok_or_else(|| format!("invalid base64 character {:?}", char::from(c)))?;
            n |= v << (18 - 6 * i);
        }
        let whole = chunk.len() - 1;
        let unused = match whole {
            1 => n & 0xffff,
            2 => n & 0xff,
            _ => 0,
        };
        if unused != 0 {
            return Err("non-zero bits in the end of the base64 text".into());
        }
        out.extend_from_slice(&n.to_be_bytes()[1..=whole]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(decode(text.trim_end_matches('=')).unwrap(), &all[..len]);
        }
    }

    #[test]
    fn rejects_what_is_not_base64() {
        for bad in [
            "Zg=", "Z", "Zm9vY", "Zm9v!A==", "Zm 9v", "Zh==", "Zm9=", "=", "Zg==Zg==",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode("Zm-v").unwrap_err(), "invalid base64 character '-'");
    }
}
