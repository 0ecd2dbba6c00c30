//! Byte sizes: `512M`, `2G`, `1.5G`, `1048576`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A size in bytes.
///
/// Parsed from a number with an optional binary suffix, like QEMU: `K`, `M`, `G`, `T`, `P`, `E`
/// (powers of 1024, either case, optionally followed by `iB` or `B`) or `B` for bytes. **A plain
/// number is bytes** (unlike QEMU's `-m`, where it is MiB). A decimal fraction is accepted when
/// the result is a whole number of bytes (`1.5G`, but not `1.3B`). Whitespace, signs, empty
/// text and values above `u64::MAX` are rejected.
///
/// It is displayed with the largest suffix that represents it exactly (`2G`, `1536M`, `4097`),
/// a form that both QEMU and qemu-img read back to the same number of bytes.
///
/// ```
/// use qemu_cmdline::Size;
/// let s: Size = "1.5G".parse().unwrap();
/// assert_eq!(s.bytes(), 1536 * 1024 * 1024);
/// assert_eq!(s.to_string(), "1536M");
/// assert!("12 parsecs".parse::<Size>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(u64);

const UNITS: [(char, u32); 6] = [
    ('E', 60),
    ('P', 50),
    ('T', 40),
    ('G', 30),
    ('M', 20),
    ('K', 10),
];

impl Size {
    /// A size of `n` bytes.
    pub const fn bytes_exact(n: u64) -> Size {
        Size(n)
    }
    /// `n` KiB. Saturates at `u64::MAX`.
    pub const fn kib(n: u64) -> Size {
        Size(n.saturating_mul(1 << 10))
    }
    /// `n` MiB. Saturates at `u64::MAX`.
    pub const fn mib(n: u64) -> Size {
        Size(n.saturating_mul(1 << 20))
    }
    /// `n` GiB. Saturates at `u64::MAX`.
    pub const fn gib(n: u64) -> Size {
        Size(n.saturating_mul(1 << 30))
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses a size; see the type's documentation for the accepted forms.
    pub fn parse(text: &str) -> Result<Size, Error> {
        let bad = |reason: &str| Error::InvalidSize {
            input: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        let num_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(num_end);
        let shift = match suffix {
            "" | "B" | "b" => 0,
            _ => {
                let mut chars = suffix.chars();
                let unit = chars.next().map(|c| c.to_ascii_uppercase());
                let Some(&(_, shift)) = UNITS.iter().find(|(u, _)| Some(*u) == unit) else {
                    return Err(bad(
                        "expected a number with an optional suffix B, K, M, G, T, P or E",
                    ));
                };
                match chars.as_str() {
                    "" | "B" | "b" | "iB" | "ib" => shift,
                    _ => {
                        return Err(bad(
                            "expected a number with an optional suffix B, K, M, G, T, P or E",
                        ))
                    }
                }
            }
        };
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() || frac_part.contains('.') || number.ends_with('.') {
            return Err(bad("expected digits, optionally with one decimal fraction"));
        }
        let overflow = || bad("it is larger than 16 EiB - 1");
        let int: u64 = int_part.parse().map_err(|_| overflow())?;
        let mut total = (int as u128) << shift;
        if !frac_part.is_empty() {
            if frac_part.len() > 18 {
                return Err(bad("the fraction has too many digits"));
            }
            let frac: u128 = frac_part.parse().map_err(|_| bad("bad fraction"))?;
            let denom = 10u128.pow(frac_part.len() as u32);
            let scaled = frac << shift;
            if scaled % denom != 0 {
                return Err(bad("the fraction is not a whole number of bytes"));
            }
            total += scaled / denom;
        }
        u64::try_from(total).map(Size).map_err(|_| overflow())
    }

    /// The size as QEMU's `-m` reads it: always with a suffix, since a bare number there is MiB.
    pub fn to_qemu_memory(self) -> String {
        let text = self.to_string();
        if text.ends_with(|c: char| c.is_ascii_digit()) {
            format!("{text}B")
        } else {
            text
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (unit, shift) in UNITS {
                if self.0.trailing_zeros() >= shift {
                    return write!(f, "{}{unit}", self.0 >> shift);
                }
            }
        }
        write!(f, "{}", self.0)
    }
}

impl FromStr for Size {
    type Err = Error;
    fn from_str(s: &str) -> Result<Size, Error> {
        Size::parse(s)
    }
}

impl From<u64> for Size {
    fn from(n: u64) -> Size {
        Size(n)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = Size;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size: a number of bytes or a string like \"512M\" or \"2G\"")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
        Ok(Size(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
        u64::try_from(v)
            .map(Size)
            .map_err(|_| E::custom(format!("size {v} is negative")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
        Size::parse(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<u64, Error> {
        Size::parse(s).map(Size::bytes)
    }

    #[test]
    fn parses_suffixes() {
        assert_eq!(p("0"), Ok(0));
        assert_eq!(p("1024"), Ok(1024));
        assert_eq!(p("1024B"), Ok(1024));
        assert_eq!(p("4k"), Ok(4096));
        assert_eq!(p("512M"), Ok(512 << 20));
        assert_eq!(p("512MiB"), Ok(512 << 20));
        assert_eq!(p("512mb"), Ok(512 << 20));
        assert_eq!(p("2G"), Ok(2 << 30));
        assert_eq!(p("1T"), Ok(1 << 40));
        assert_eq!(p("1P"), Ok(1 << 50));
        assert_eq!(p("15E"), Ok(15 << 60));
        assert_eq!(p("1.5G"), Ok(3 << 29));
        assert_eq!(p("0.5K"), Ok(512));
        assert_eq!(p("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            " 1G",
            "1G ",
            "1 G",
            "G",
            "-1",
            "+1",
            "1.",
            ".5G",
            "1..5G",
            "1.2.3G",
            "1X",
            "1GG",
            "1Gi",
            "1.3",
            "0.1K",
            "16E",
            "18446744073709551616",
            "1e3",
            "０",
        ] {
            assert!(p(bad).is_err(), "{bad:?} was accepted");
        }
        let e = Size::parse("1.3").unwrap_err();
        assert!(e.to_string().contains("whole number of bytes"), "{e}");
    }

    #[test]
    fn displays_largest_exact_suffix() {
        assert_eq!(Size::gib(2).to_string(), "2G");
        assert_eq!(Size::mib(1536).to_string(), "1536M");
        assert_eq!(Size::from(4097).to_string(), "4097");
        assert_eq!(Size::from(0).to_string(), "0");
        assert_eq!(Size::from(4097).to_qemu_memory(), "4097B");
        assert_eq!(Size::mib(512).to_qemu_memory(), "512M");
        for n in [0u64, 1, 1023, 1024, 3 << 29, u64::MAX, 1 << 63] {
            let s = Size::from(n);
            assert_eq!(Size::parse(&s.to_string()), Ok(s));
        }
    }

    #[test]
    fn serde_accepts_numbers_and_strings() {
        let s: Size = serde_json::from_str("\"2G\"").unwrap();
        assert_eq!(s, Size::gib(2));
        let s: Size = serde_json::from_str("4096").unwrap();
        assert_eq!(s.bytes(), 4096);
        assert_eq!(serde_json::to_string(&Size::mib(3)).unwrap(), "\"3M\"");
        assert!(serde_json::from_str::<Size>("-1").is_err());
        assert!(serde_json::from_str::<Size>("\"lots\"").is_err());
    }
}
