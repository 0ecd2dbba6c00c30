//! The supervisor's clients: accepting them, reading their requests, and their input past
//! the request (console keys, QMP).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use qmp_proto::Decoder;
use serde_json::json;

use super::{Supervisor, CLIENTS_MAX};
use crate::sys::{self, PollFd};
use crate::vms::control::LINE_MAX;

/// What a client connection is doing.
pub(super) enum Kind {
    /// Its request line is being read.
    Request,
    /// It is the console.
    Console,
    /// It speaks QMP.
    Qmp {
        decoder: Box<Decoder>,
        negotiated: bool,
    },
    /// It waits for the VM to stop.
    Waiting,
    /// It waits for a command it runs in the guest (`exec`) to end.
    Exec,
    /// Its answer is written; it is closed once that is out.
    Closing,
}

pub(super) struct Client {
    pub(super) id: u64,
    pub(super) stream: UnixStream,
    pub(super) input: Vec<u8>,
    pub(super) output: Vec<u8>,
    pub(super) kind: Kind,
    /// The connection failed or ended: drop it.
    pub(super) dead: bool,
}

impl Client {
    pub(super) fn send(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Writes what it can without waiting.
    pub(super) fn flush(&mut self) {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Writes everything out, waiting up to a second (the supervisor is about to exit).
    pub(super) fn flush_before_exit(&mut self) {
        let end = Instant::now() + Duration::from_secs(1);
        loop {
            self.flush();
            if self.output.is_empty() || self.dead || Instant::now() >= end {
                return;
            }
            let mut fds = [PollFd::new(self.stream.as_raw_fd(), libc::POLLOUT)];
            let _ = sys::poll(&mut fds, Some(Duration::from_millis(50)));
        }
    }
}

impl Supervisor<'_> {
    pub(super) fn console_client(&mut self) -> Option<&mut Client> {
        let id = self.console?;
        self.clients.iter_mut().find(|c| c.id == id)
    }

    pub(super) fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= CLIENTS_MAX || stream.set_nonblocking(true).is_err() {
                        log::warn!("too many clients: refusing one");
                        continue;
                    }
                    self.next_id += 1;
                    self.clients.push(Client {
                        id: self.next_id,
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        kind: Kind::Request,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    pub(super) fn index(&self, id: u64) -> Option<usize> {
        self.clients.iter().position(|c| c.id == id)
    }

    pub(super) fn read_client(&mut self, id: u64, buf: &mut [u8]) {
        let Some(i) = self.index(id) else { return };
        let n = match self.clients[i].stream.read(buf) {
            Ok(0) => {
                self.clients[i].dead = true;
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(_) => {
                self.clients[i].dead = true;
                return;
            }
        };
        let bytes = &buf[..n];
        match self.clients[i].kind {
            Kind::Request => {
                self.clients[i].input.extend_from_slice(bytes);
                let Some(pos) = self.clients[i].input.iter().position(|&b| b == b'\n') else {
                    if self.clients[i].input.len() > LINE_MAX {
                        self.clients[i].dead = true;
                    }
                    return;
                };
                let line: Vec<u8> = self.clients[i].input.drain(..=pos).collect();
                let rest = std::mem::take(&mut self.clients[i].input);
                self.request(id, &line);
                // Bytes sent right after the request belong to the new mode.
                if !rest.is_empty() {
                    self.mode_input(id, &rest);
                }
            }
            _ => {
                let bytes = bytes.to_vec();
                self.mode_input(id, &bytes);
            }
        }
    }

    /// Input of a client past its request: console keys or QMP.
    pub(super) fn mode_input(&mut self, id: u64, bytes: &[u8]) {
        let Some(i) = self.index(id) else { return };
        match &mut self.clients[i].kind {
            Kind::Console => {
                self.to_guest.extend_from_slice(bytes);
                return;
            }
            Kind::Qmp { decoder, .. } => decoder.feed(bytes),
            Kind::Request | Kind::Waiting | Kind::Exec | Kind::Closing => return,
        }
        loop {
            let Some(i) = self.index(id) else { return };
            let next = match &mut self.clients[i].kind {
                Kind::Qmp { decoder, .. } => decoder.next_value(),
                _ => return,
            };
            match next {
                Ok(Some(value)) => self.qmp_request(id, value),
                Ok(None) => return,
                Err(e) => {
                    let reply = json!({"error": {"class": "GenericError",
                        "desc": format!("JSON parse error: {e}")}});
                    let c = &mut self.clients[i];
                    c.send(format!("{reply}\r\n").as_bytes());
                    c.kind = Kind::Closing;
                    return;
                }
            }
        }
    }

    /// Answers `id` and closes it once the answer is out.
    pub(super) fn answer(&mut self, id: u64, line: Vec<u8>) {
        if let Some(i) = self.index(id) {
            let c = &mut self.clients[i];
            c.send(&line);
            c.kind = Kind::Closing;
        }
    }

    pub(super) fn reap_clients(&mut self) {
        let console = self.console;
        self.clients.retain(|c| {
            let done = c.dead || (matches!(c.kind, Kind::Closing) && c.output.is_empty());
            !done
        });
        if let Some(id) = console {
            if !self
                .clients
                .iter()
                .any(|c| c.id == id && matches!(c.kind, Kind::Console))
            {
                self.console = None;
            }
        }
    }
}
