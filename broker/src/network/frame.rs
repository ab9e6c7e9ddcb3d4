//! Reading size-prefixed request frames with a bound on their size.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a connection stopped reading.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i64, max: usize },
    #[error("negative request size {0}")]
    NegativeSize(i32),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads frames from a socket into one growing buffer; frames are split off it without copying.
pub struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    max_size: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, max_size: usize) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::with_capacity(64 * 1024),
            max_size,
        }
    }

    /// The next frame without its size prefix, or `None` at a clean end of stream.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if self.buffer.len() >= 4 {
                let size = i32::from_be_bytes([
                    self.buffer[0],
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                ]);
                if size < 0 {
                    return Err(FrameError::NegativeSize(size));
                }
                let size = size as usize;
                if size > self.max_size {
                    return Err(FrameError::TooLarge {
                        size: size as i64,
                        max: self.max_size,
                    });
                }
                if self.buffer.len() >= 4 + size {
                    self.buffer.advance(4);
                    return Ok(Some(self.buffer.split_to(size).freeze()));
                }
                // Room for the whole frame, so the socket reads straight into place.
                self.buffer.reserve(4 + size - self.buffer.len());
            } else if self.buffer.capacity() - self.buffer.len() < 4096 {
                self.buffer.reserve(64 * 1024);
            }
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_split_and_limits_hold() {
        let mut data = Vec::new();
        for body in [&b"abc"[..], &b""[..], &b"hello"[..]] {
            data.extend_from_slice(&(body.len() as i32).to_be_bytes());
            data.extend_from_slice(body);
        }
        let mut r = FrameReader::new(&data[..], 10);
        assert_eq!(&r.next_frame().await.unwrap().unwrap()[..], b"abc");
        assert_eq!(&r.next_frame().await.unwrap().unwrap()[..], b"");
        assert_eq!(&r.next_frame().await.unwrap().unwrap()[..], b"hello");
        assert!(r.next_frame().await.unwrap().is_none());

        let big = 11i32.to_be_bytes();
        assert!(matches!(
            FrameReader::new(&big[..], 10).next_frame().await,
            Err(FrameError::TooLarge { .. })
        ));
        let neg = (-1i32).to_be_bytes();
        assert!(matches!(
            FrameReader::new(&neg[..], 10).next_frame().await,
            Err(FrameError::NegativeSize(-1))
        ));
        let cut = [0u8, 0, 0, 5, b'a'];
        assert!(matches!(
            FrameReader::new(&cut[..], 10).next_frame().await,
            Err(FrameError::Truncated)
        ));
    }
}
