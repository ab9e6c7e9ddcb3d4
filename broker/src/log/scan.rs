//! Forward scanning of batch headers in a segment file with positional reads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::batch::{verify_crc, BatchHeader, HEADER_LEN};

/// Read size used while scanning: many small headers per syscall.
const CHUNK: usize = 64 * 1024;

/// Reads as much of `buf` as the file holds at `pos`; returns the byte count.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Serves byte ranges of `file[..end]` from a chunk buffer.
pub(crate) struct ChunkReader<'a> {
    file: &'a File,
    end: u64,
    buf: Vec<u8>,
    buf_pos: u64,
}

impl<'a> ChunkReader<'a> {
    pub fn new(file: &'a File, end: u64) -> Self {
        ChunkReader {
            file,
            end,
            buf: Vec::new(),
            buf_pos: 0,
        }
    }

    /// `len` bytes at `pos`, or `None` when they are not all below `end` (or the
    /// file turned out shorter, e.g. truncated concurrently).
    pub fn get(&mut self, pos: u64, len: usize) -> io::Result<Option<&[u8]>> {
        let stop = match pos.checked_add(len as u64) {
            Some(s) if s <= self.end => s,
            _ => return Ok(None),
        };
        let cached = pos >= self.buf_pos && stop <= self.buf_pos + self.buf.len() as u64;
        if !cached {
            // Bounded by `end`, so a bogus length cannot allocate past the file.
            let want = (len.max(CHUNK) as u64).min(self.end - pos) as usize;
            self.buf.resize(want, 0);
            let n = read_full_at(self.file, &mut self.buf, pos)?;
            self.buf.truncate(n);
            self.buf_pos = pos;
            if n < len {
                return Ok(None);
            }
        }
        let start = (pos - self.buf_pos) as usize;
        Ok(Some(&self.buf[start..start + len]))
    }
}

/// One step of a scan.
#[derive(Debug)]
pub(crate) enum Scanned {
    Batch {
        position: u64,
        header: BatchHeader,
    },
    /// Clean end: the previous batch ended exactly at the scan limit.
    End,
    /// Torn or corrupt data starts at `position`.
    Invalid {
        position: u64,
        reason: String,
    },
}

/// Walks whole batches from a position up to a limit, parsing only headers
/// (plus the CRC when `verify_crc`).
pub(crate) struct BatchScanner<'a> {
    reader: ChunkReader<'a>,
    pos: u64,
    end: u64,
    verify_crc: bool,
}

impl<'a> BatchScanner<'a> {
    pub fn new(file: &'a File, start: u64, end: u64, verify_crc: bool) -> Self {
        BatchScanner {
            reader: ChunkReader::new(file, end),
            pos: start,
            end,
            verify_crc,
        }
    }

    pub fn next_batch(&mut self) -> io::Result<Scanned> {
        let position = self.pos;
        if position >= self.end {
            return Ok(Scanned::End);
        }
        let invalid = |reason: String| Ok(Scanned::Invalid { position, reason });
        let avail = self.end - position;
        let head_len = (HEADER_LEN as u64).min(avail) as usize;
        let Some(head) = self.reader.get(position, head_len)? else {
            return invalid("file shorter than expected".into());
        };
        let header = match BatchHeader::parse(head) {
            Ok(h) => h,
            Err(e) => return invalid(e.to_string()),
        };
        let total = header.total_len() as u64;
        if total > avail {
            return invalid(format!(
                "batch of {total} bytes extends past the end ({avail} bytes left)"
            ));
        }
        if self.verify_crc {
            let Some(batch) = self.reader.get(position, total as usize)? else {
                return invalid("file shorter than expected".into());
            };
            if let Err(e) = verify_crc(batch, &header) {
                return invalid(e.to_string());
            }
        }
        self.pos = position + total;
        Ok(Scanned::Batch { position, header })
    }
}

/// The first batch at or after `start` whose last offset is >= `offset`.
pub(crate) fn find_batch(
    file: &File,
    start: u64,
    end: u64,
    offset: i64,
) -> io::Result<Option<(u64, BatchHeader)>> {
    let mut scanner = BatchScanner::new(file, start, end, false);
    loop {
        match scanner.next_batch()? {
            Scanned::Batch { position, header } if header.last_offset() >= offset => {
                return Ok(Some((position, header)))
            }
            Scanned::Batch { .. } => {}
            Scanned::End | Scanned::Invalid { .. } => return Ok(None),
        }
    }
}
