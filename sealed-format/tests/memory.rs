//! 64 MiB sealed and unsealed as one pipeline, never held: a generator feeds a
//! `SealWriter`, whose output is read back through an `UnsealReader` as it is produced.
//! Neither ever holds more than one chunk (and its tag), whatever the stream's length.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;

use common::{billing, header, key_pair, pattern_byte};
use sealed_format::{Header, SealWriter, TAG_LEN, UnsealReader};

const TOTAL: u64 = 64 * 1024 * 1024;
const CHUNK: u32 = 64 * 1024;
const BOUND: usize = CHUNK as usize + TAG_LEN;

/// The bytes written but not yet read.
#[derive(Clone, Default)]
struct Pipe(Rc<RefCell<VecDeque<u8>>>);

impl Write for Pipe {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sealed data, made only as it is read: plaintext is generated, 10,007 bytes at a time,
/// whenever the pipe runs dry.
struct LazilySealed {
    writer: Option<SealWriter<Pipe>>,
    pipe: Pipe,
    generated: u64,
    most_in_pipe: usize,
}

impl Read for LazilySealed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pipe.0.borrow().is_empty() && self.writer.is_some() {
            let remaining = TOTAL - self.generated;
            if remaining == 0 {
                self.writer.take().unwrap().finish()?;
                break;
            }
            let piece: Vec<u8> = (self.generated..self.generated + remaining.min(10_007))
                .map(pattern_byte)
                .collect();
            let writer = self.writer.as_mut().unwrap();
            writer.write_all(&piece)?;
            assert_eq!(writer.buffer_capacity(), BOUND);
            self.generated += piece.len() as u64;
        }
        let mut pipe = self.pipe.0.borrow_mut();
        self.most_in_pipe = self.most_in_pipe.max(pipe.len());
        let n = pipe.len().min(out.len());
        for (slot, byte) in out.iter_mut().zip(pipe.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

#[test]
fn sixty_four_mib_in_constant_memory() {
    let header = header(CHUNK);
    let (sealing, opening) = key_pair();
    let pipe = Pipe::default();
    let writer = SealWriter::new(pipe.clone(), &header, sealing, &billing()).unwrap();
    let mut sealed = LazilySealed {
        writer: Some(writer),
        pipe,
        generated: 0,
        most_in_pipe: 0,
    };

    let (read_header, _) = Header::read_from(&mut sealed).unwrap();
    assert_eq!(read_header, header);
    let mut reader = UnsealReader::new(sealed, &header, &opening, &billing()).unwrap();
    let mut buf = vec![0u8; 100_003];
    let mut position = 0u64;
    loop {
        let n = reader.read(&mut buf).unwrap();
        assert_eq!(reader.buffer_capacity(), BOUND);
        if n == 0 {
            break;
        }
        for (offset, byte) in buf[..n].iter().enumerate() {
            assert_eq!(
                *byte,
                pattern_byte(position + offset as u64),
                "at {position}+{offset}"
            );
        }
        position += n as u64;
    }
    assert_eq!(position, TOTAL);
    let sealed = reader.into_inner();
    assert!(sealed.writer.is_none(), "the writer finished");
    assert!(
        sealed.most_in_pipe <= 2 * BOUND,
        "{} bytes in the pipe",
        sealed.most_in_pipe
    );
}
