//! The typed qtest commands and the parsers of their replies.
//!
//! Formats follow QEMU's qtest server (`softmmu/qtest.c` in 7.2): port and memory values
//! come back in hex (`OK 0x%04x` for `in*`, `OK 0x%016x` for `read*`), the clock in decimal,
//! `read` as `0x` followed by two hex digits per byte, `b64read` in padded base64.
//! Arguments are sent in hex, except the clock and `set_irq_in`'s numbers (decimal: QEMU
//! parses with base 0, where a leading `0` would mean octal).

use super::{base64, check_word, invalid, Call, QtestError, QtestSession};

/// The target's byte order, as `endianness` reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endianness {
    /// `OK little`.
    Little,
    /// `OK big`.
    Big,
}

type Result<T> = std::result::Result<Call<T>, QtestError>;

/// QEMU parses clock values as `int64_t`; a larger one fails its assertion.
fn check_clock(command: &str, ns: u64) -> std::result::Result<(), QtestError> {
    if i64::try_from(ns).is_err() {
        return Err(invalid(
            command,
            format!(
                "{ns} ns is beyond QEMU's clock range (at most {})",
                i64::MAX
            ),
        ));
    }
    Ok(())
}

impl QtestSession {
    /// `clock_step [NS]`: advances the virtual clock by `ns` nanoseconds, or with `None` to
    /// the next timer deadline, running the timers on the way. The reply is the new clock, in
    /// nanoseconds. Needs the qtest accelerator (`-accel qtest`).
    pub fn clock_step(&mut self, ns: Option<u64>) -> Result<u64> {
        match ns {
            None => self.issue("clock_step".into(), 0, parse_clock),
            Some(ns) => {
                let line = format!("clock_step {ns}");
                check_clock(&line, ns)?;
                self.issue(line, 0, parse_clock)
            }
        }
    }

    /// `clock_set NS`: advances the virtual clock to `ns` nanoseconds (no change if it is
    /// already past). The reply is the new clock. Needs the qtest accelerator.
    pub fn clock_set(&mut self, ns: u64) -> Result<u64> {
        let line = format!("clock_set {ns}");
        check_clock(&line, ns)?;
        self.issue(line, 0, parse_clock)
    }

    /// `inb PORT`: reads a byte from an I/O port.
    pub fn inb(&mut self, port: u16) -> Result<u8> {
        self.issue(format!("inb {port:#x}"), 0, parse_hex::<u8>)
    }

    /// `inw PORT`: reads 16 bits from an I/O port.
    pub fn inw(&mut self, port: u16) -> Result<u16> {
        self.issue(format!("inw {port:#x}"), 0, parse_hex::<u16>)
    }

    /// `inl PORT`: reads 32 bits from an I/O port.
    pub fn inl(&mut self, port: u16) -> Result<u32> {
        self.issue(format!("inl {port:#x}"), 0, parse_hex::<u32>)
    }

    /// `outb PORT VALUE`: writes a byte to an I/O port.
    pub fn outb(&mut self, port: u16, value: u8) -> Result<()> {
        self.issue(format!("outb {port:#x} {value:#x}"), 0, parse_unit)
    }

    /// `outw PORT VALUE`: writes 16 bits to an I/O port.
    pub fn outw(&mut self, port: u16, value: u16) -> Result<()> {
        self.issue(format!("outw {port:#x} {value:#x}"), 0, parse_unit)
    }

    /// `outl PORT VALUE`: writes 32 bits to an I/O port.
    pub fn outl(&mut self, port: u16, value: u32) -> Result<()> {
        self.issue(format!("outl {port:#x} {value:#x}"), 0, parse_unit)
    }

    /// `readb ADDR`: reads a byte of guest memory (the first CPU's address space).
    pub fn readb(&mut self, addr: u64) -> Result<u8> {
        self.issue(format!("readb {addr:#x}"), 0, parse_hex::<u8>)
    }

    /// `readw ADDR`: reads 16 bits of guest memory, in the target's byte order.
    pub fn readw(&mut self, addr: u64) -> Result<u16> {
        self.issue(format!("readw {addr:#x}"), 0, parse_hex::<u16>)
    }

    /// `readl ADDR`: reads 32 bits of guest memory, in the target's byte order.
    pub fn readl(&mut self, addr: u64) -> Result<u32> {
        self.issue(format!("readl {addr:#x}"), 0, parse_hex::<u32>)
    }

    /// `readq ADDR`: reads 64 bits of guest memory, in the target's byte order.
    pub fn readq(&mut self, addr: u64) -> Result<u64> {
        self.issue(format!("readq {addr:#x}"), 0, parse_hex::<u64>)
    }

    /// `writeb ADDR VALUE`: writes a byte of guest memory.
    pub fn writeb(&mut self, addr: u64, value: u8) -> Result<()> {
        self.issue(format!("writeb {addr:#x} {value:#x}"), 0, parse_unit)
    }

    /// `writew ADDR VALUE`: writes 16 bits of guest memory, in the target's byte order.
    pub fn writew(&mut self, addr: u64, value: u16) -> Result<()> {
        self.issue(format!("writew {addr:#x} {value:#x}"), 0, parse_unit)
    }

    /// `writel ADDR VALUE`: writes 32 bits of guest memory, in the target's byte order.
    pub fn writel(&mut self, addr: u64, value: u32) -> Result<()> {
        self.issue(format!("writel {addr:#x} {value:#x}"), 0, parse_unit)
    }

    /// `writeq ADDR VALUE`: writes 64 bits of guest memory, in the target's byte order.
    pub fn writeq(&mut self, addr: u64, value: u64) -> Result<()> {
        self.issue(format!("writeq {addr:#x} {value:#x}"), 0, parse_unit)
    }

    /// `read ADDR SIZE`: reads `size` bytes of guest memory, sent back in hex (two characters
    /// a byte). A read of 0 bytes completes at once without asking QEMU (which would abort).
    /// Fails with [`QtestError::InvalidCommand`] when the reply could not fit
    /// [`max_line`](super::QtestOptions::max_line): split the read, raise the bound, or use
    /// [`b64read`](QtestSession::b64read), whose reply is a third shorter.
    pub fn read(&mut self, addr: u64, size: usize) -> Result<Vec<u8>> {
        let line = format!("read {addr:#x} {size:#x}");
        if size == 0 {
            return self.complete_locally(line, parse_hex_blob);
        }
        // "OK 0x" and two characters a byte.
        self.check_reply_fits(&line, size.checked_mul(2).and_then(|n| n.checked_add(5)))?;
        self.issue(line, size, parse_hex_blob)
    }

    /// `b64read ADDR SIZE`: reads `size` bytes of guest memory, sent back in base64. A read
    /// of 0 bytes completes at once; the reply must fit the line bound, as for
    /// [`read`](QtestSession::read).
    pub fn b64read(&mut self, addr: u64, size: usize) -> Result<Vec<u8>> {
        let line = format!("b64read {addr:#x} {size:#x}");
        if size == 0 {
            return self.complete_locally(line, parse_base64);
        }
        self.check_reply_fits(
            &line,
            base64::encoded_len(size).and_then(|n| n.checked_add(3)),
        )?;
        self.issue(line, size, parse_base64)
    }

    /// `write ADDR SIZE 0xDATA`: writes `data` to guest memory, sent in hex. Writing nothing
    /// completes at once without asking QEMU (which would answer `ERR`).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        let head = format!("write {addr:#x} {:#x}", data.len());
        if data.is_empty() {
            return self.complete_locally(head, parse_unit);
        }
        let mut line = String::with_capacity(head.len() + 3 + data.len() * 2);
        line.push_str(&head);
        line.push_str(" 0x");
        for byte in data {
            line.push(char::from(HEX[usize::from(byte >> 4)]));
            line.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        self.issue(line, 0, parse_unit)
    }

    /// `b64write ADDR SIZE DATA`: writes `data` to guest memory, sent in base64. Writing
    /// nothing completes at once without asking QEMU.
    pub fn b64write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        let mut line = format!("b64write {addr:#x} {:#x}", data.len());
        if data.is_empty() {
            return self.complete_locally(line, parse_unit);
        }
        line.push(' ');
        base64::encode_into(data, &mut line);
        self.issue(line, 0, parse_unit)
    }

    /// `memset ADDR SIZE VALUE`: fills `size` bytes of guest memory with `value` (a size of 0
    /// does nothing).
    pub fn memset(&mut self, addr: u64, size: u64, value: u8) -> Result<()> {
        self.issue(
            format!("memset {addr:#x} {size:#x} {value:#x}"),
            0,
            parse_unit,
        )
    }

    /// `irq_intercept_in QOM-PATH`: reports the device's unnamed GPIO inputs as
    /// [`Irq`](super::Irq) notifications (on the PC, `ioapic` reports the ISA interrupts).
    /// QEMU intercepts one device per run: another device then fails (`FAIL IRQ intercept
    /// already enabled`), the same one again succeeds. A path that resolves to no object
    /// fails (`FAIL Unknown device`); one that resolves to an object that is not a device
    /// aborts QEMU.
    pub fn irq_intercept_in(&mut self, path: &str) -> Result<()> {
        self.path_command("irq_intercept_in", path)
    }

    /// `irq_intercept_out QOM-PATH`: reports the device's unnamed GPIO outputs as
    /// [`Irq`](super::Irq) notifications; see [`irq_intercept_in`](Self::irq_intercept_in).
    pub fn irq_intercept_out(&mut self, path: &str) -> Result<()> {
        self.path_command("irq_intercept_out", path)
    }

    /// `set_irq_in QOM-PATH NAME NUM LEVEL`: sets input `num` of the device's GPIO list
    /// `name` (`None` for the unnamed list) to `level`. QEMU aborts if the list has no input
    /// `num`.
    pub fn set_irq_in(
        &mut self,
        path: &str,
        name: Option<&str>,
        num: u32,
        level: i32,
    ) -> Result<()> {
        let name = name.unwrap_or("unnamed-gpio-in");
        let line = format!("set_irq_in {path} {name} {num} {level}");
        check_word(&line, path)?;
        check_word(&line, name)?;
        if i32::try_from(num).is_err() {
            return Err(invalid(&line, "the GPIO number is beyond QEMU's int range"));
        }
        self.issue(line, 0, parse_unit)
    }

    /// `endianness`: the target's byte order.
    pub fn endianness(&mut self) -> Result<Endianness> {
        self.issue("endianness".into(), 0, parse_endianness)
    }

    /// `module_load PREFIX NAME`: loads QEMU module `PREFIX` + `NAME` (e.g. `hw-` and
    /// `display-qxl`). QEMU answers a bare `FAIL` when the module cannot be loaded.
    pub fn module_load(&mut self, prefix: &str, name: &str) -> Result<()> {
        let line = format!("module_load {prefix} {name}");
        check_word(&line, prefix)?;
        check_word(&line, name)?;
        self.issue(line, 0, parse_unit)
    }

    fn path_command(&mut self, command: &str, path: &str) -> Result<()> {
        let line = format!("{command} {path}");
        check_word(&line, path)?;
        self.issue(line, 0, parse_unit)
    }

    pub(super) fn check_reply_fits(
        &self,
        line: &str,
        reply_len: Option<usize>,
    ) -> std::result::Result<(), QtestError> {
        let limit = self.options.max_line;
        match reply_len {
            Some(len) if len <= limit => Ok(()),
            _ => Err(invalid(
                line,
                format!("the reply would exceed the line bound of {limit} bytes"),
            )),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn parse_unit(values: &str, _size: usize) -> std::result::Result<(), String> {
    if values.is_empty() {
        Ok(())
    } else {
        Err("expected a bare OK".into())
    }
}

/// A `0x`-prefixed hex number that fits `T`.
fn parse_hex<T: TryFrom<u64>>(values: &str, _size: usize) -> std::result::Result<T, String> {
    let digits = values
        .strip_prefix("0x")
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("expected a 0x-prefixed hex number")?;
    let value = u64::from_str_radix(digits, 16).map_err(|_| "the number does not fit 64 bits")?;
    T::try_from(value).map_err(|_| {
        format!(
            "{value:#x} does not fit {} bits",
            std::mem::size_of::<T>() * 8
        )
    })
}

/// The clock, in decimal nanoseconds (QEMU prints an `int64_t`).
fn parse_clock(values: &str, _size: usize) -> std::result::Result<u64, String> {
    if values.is_empty() || !values.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected the clock in decimal nanoseconds".into());
    }
    values
        .parse::<i64>()
        .ok()
        .and_then(|ns| u64::try_from(ns).ok())
        .ok_or_else(|| "the clock is beyond QEMU's clock range".into())
}

/// `0x` and exactly two hex digits a byte.
fn parse_hex_blob(values: &str, size: usize) -> std::result::Result<Vec<u8>, String> {
    if size == 0 && values.is_empty() {
        return Ok(Vec::new());
    }
    let digits = values
        .strip_prefix("0x")
        .ok_or("expected 0x-prefixed hex data")?
        .as_bytes();
    if digits.len() != size.saturating_mul(2) {
        return Err(format!(
            "expected {size} bytes, got {} hex digits",
            digits.len()
        ));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let nibble = |c: u8| char::from(c).to_digit(16);
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(high), Some(low)) => Ok((high * 16 + low) as u8),
                _ => Err(format!(
                    "invalid hex digits {:?}",
                    pair.escape_ascii().to_string()
                )),
            }
        })
        .collect()
}

/// Base64 of exactly `size` bytes.
fn parse_base64(values: &str, size: usize) -> std::result::Result<Vec<u8>, String> {
    let data = base64::decode(values).map_err(|e| e.to_string())?;
    if data.len() != size {
        return Err(format!("expected {size} bytes, got {}", data.len()));
    }
    Ok(data)
}

fn parse_endianness(values: &str, _size: usize) -> std::result::Result<Endianness, String> {
    match values {
        "little" => Ok(Endianness::Little),
        "big" => Ok(Endianness::Big),
        _ => Err("expected little or big".into()),
    }
}
