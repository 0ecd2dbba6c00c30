//! What QEMU's qtest server needs of a command line so as not to abort.
//!
//! QEMU parses a line by splitting it at every space and asserts that each argument of a
//! known command is there and is a number `strtoul`-style (base 0: decimal, `0x` hex, or
//! `0`-prefixed octal): a missing or malformed one aborts QEMU. [`check_line`] checks that
//! for the commands QEMU 7.2 knows, so that [`send_raw`](super::QtestSession::send_raw)
//! cannot crash it. Extra arguments are ignored by QEMU and allowed; commands it does not
//! know (or that only other targets have) are passed on: QEMU answers them with `FAIL`.

/// The kind of one argument.
#[derive(Clone, Copy)]
enum Arg {
    /// A number QEMU reads as `uint64_t`.
    U64,
    /// A non-zero `uint64_t` (`read`'s size: QEMU asserts it is not 0).
    Size,
    /// An I/O port: QEMU asserts it is at most 0xffff.
    Port,
    /// A number QEMU reads as `int64_t` (the clock).
    I64,
    /// A number QEMU reads as `int`.
    Int,
    /// Anything (a QOM path, a name, data).
    Word,
}

/// The arguments a command needs (`None`: not a command QEMU 7.2 knows), and whether the
/// last of them is optional (only `clock_step`'s is).
fn arguments(command: &str) -> Option<(&'static [Arg], bool)> {
    use Arg::*;
    let args: &'static [Arg] = match command {
        "clock_step" => return Some((&[I64], true)),
        "clock_set" => &[I64],
        "inb" | "inw" | "inl" => &[Port],
        "outb" | "outw" | "outl" => &[Port, U64],
        "readb" | "readw" | "readl" | "readq" => &[U64],
        "writeb" | "writew" | "writel" | "writeq" => &[U64, U64],
        "read" => &[U64, Size],
        "b64read" => &[U64, U64],
        "write" | "b64write" => &[U64, U64, Word],
        "memset" => &[U64, U64, U64],
        "irq_intercept_in" | "irq_intercept_out" => &[Word],
        "set_irq_in" => &[Word, Word, Int, Int],
        "module_load" => &[Word, Word],
        "endianness" => &[],
        _ => return None,
    };
    Some((args, false))
}

/// Checks the arguments of a line already split into non-empty words. On success, returns
/// the size a `read` or `b64read` asks for, so that the caller can check its reply's length.
pub(crate) fn check_line(words: &[&str]) -> Result<Option<u64>, String> {
    let (command, given) = words.split_first().ok_or("the line is empty")?;
    let Some((args, optional_last)) = arguments(command) else {
        return Ok(None);
    };
    let required = args.len() - usize::from(optional_last);
    if given.len() < required {
        return Err(format!(
            "{command} needs {required} argument{}, QEMU aborts without them",
            if required == 1 { "" } else { "s" }
        ));
    }
    for (arg, word) in args.iter().zip(given) {
        let fits = match arg {
            Arg::U64 => unsigned(word).is_some(),
            Arg::Size => unsigned(word).is_some_and(|n| n > 0),
            Arg::Port => unsigned(word).is_some_and(|n| n <= 0xffff),
            Arg::I64 => signed(word).is_some(),
            Arg::Int => signed(word).is_some_and(|n| i32::try_from(n).is_ok()),
            Arg::Word => true,
        };
        if !fits {
            let what = match arg {
                Arg::U64 => "a number (decimal, 0x hex or 0 octal) of at most 64 bits",
                Arg::Size => "a size above 0",
                Arg::Port => "a port number of at most 0xffff",
                Arg::I64 => "a signed 64-bit number",
                Arg::Int => "a signed 32-bit number",
                Arg::Word => unreachable!("every word fits"),
            };
            return Err(format!(
                "{command}: {word:?} is not {what}, QEMU aborts on it"
            ));
        }
    }
    Ok(match *command {
        "read" | "b64read" => unsigned(given[1]),
        _ => None,
    })
}

/// A non-negative number as `strtoull` reads it with base 0.
fn unsigned(word: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
            (hex, 16)
        } else if word.len() > 1 && word.starts_with('0') {
            (&word[1..], 8)
        } else {
            (word, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// A number as `strtoll` reads it with base 0.
fn signed(word: &str) -> Option<i64> {
    match word.strip_prefix('-') {
        Some(magnitude) => {
            let n = unsigned(magnitude)?;
            0i64.checked_sub_unsigned(n)
        }
        None => i64::try_from(unsigned(word)?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str) -> Result<Option<u64>, String> {
        check_line(&line.split(' ').collect::<Vec<_>>())
    }

    #[test]
    fn numbers_as_qemu_reads_them() {
        assert_eq!(unsigned("0"), Some(0));
        assert_eq!(unsigned("42"), Some(42));
        assert_eq!(unsigned("0x2A"), Some(42));
        assert_eq!(unsigned("0X2a"), Some(42));
        assert_eq!(unsigned("052"), Some(42));
        assert_eq!(unsigned("0xffffffffffffffff"), Some(u64::MAX));
        for bad in [
            "",
            "0x",
            "x1",
            "08",
            "1a",
            "0x1g",
            "+1",
            "-1",
            "0x10000000000000000",
        ] {
            assert_eq!(unsigned(bad), None, "{bad:?}");
        }
        assert_eq!(signed("-0x10"), Some(-16));
        assert_eq!(signed("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(signed("9223372036854775808"), None);
        assert_eq!(signed("-9223372036854775809"), None);
        assert_eq!(signed("--1"), None);
    }

    #[test]
    fn lines_qemu_would_abort_on() {
        for (line, message) in [
            ("inb", "inb needs 1 argument, QEMU aborts without them"),
            ("outl 0xcf8", "outl needs 2 arguments, QEMU aborts without them"),
            ("set_irq_in a b 1", "set_irq_in needs 4 arguments, QEMU aborts without them"),
            ("inb 0x10000", "inb: \"0x10000\" is not a port number of at most 0xffff, QEMU aborts on it"),
            ("readq x", "readq: \"x\" is not a number (decimal, 0x hex or 0 octal) of at most 64 bits, QEMU aborts on it"),
            ("read 0 0", "read: \"0\" is not a size above 0, QEMU aborts on it"),
            ("memset 0 1 x", "memset: \"x\" is not a number (decimal, 0x hex or 0 octal) of at most 64 bits, QEMU aborts on it"),
            ("clock_set 1.5", "clock_set: \"1.5\" is not a signed 64-bit number, QEMU aborts on it"),
            ("set_irq_in a b 2147483648 1", "set_irq_in: \"2147483648\" is not a signed 32-bit number, QEMU aborts on it"),
        ] {
            assert_eq!(check(line), Err(message.to_owned()), "{line}");
        }
    }

    #[test]
    fn lines_qemu_accepts() {
        for line in [
            "clock_step",
            "clock_step 10",
            "clock_set -1",
            "inb 0xffff",
            "outb 0x80 0x1ff",
            "write 0x1000 0x0 0x",
            "memset 0 0 0",
            "set_irq_in ioapic unnamed-gpio-in 8 -1",
            "endianness",
            "endianness extra",
            "module_load hw- display-qxl",
            "foo",
            "rtas x",
        ] {
            assert!(check(line).is_ok(), "{line}");
        }
        assert_eq!(check("read 0 0x10"), Ok(Some(16)));
        assert_eq!(check("b64read 0 0"), Ok(Some(0)));
        assert_eq!(check("readq 0"), Ok(None));
    }
}
