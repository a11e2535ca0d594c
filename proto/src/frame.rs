//! Length-prefixed frame codec: `u32` big-endian length, then a JSON payload.
//!
//! Frames are bounded by [`MAX_FRAME_LEN`] so a hostile peer cannot make us allocate more than
//! that for one message. Decoding garbage returns an error, never panics; a clean EOF before the
//! first byte of a frame is `Ok(None)`, an EOF inside a frame is an error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload one frame may carry (64 KiB). Control messages and stream headers are tiny;
/// this bound exists to refuse hostile input early.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Size of the length prefix.
const LEN_PREFIX: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame longer than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLong(usize),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The payload is not a valid message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encode one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    let payload = serde_json::to_vec(msg)?;
    if payload.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(payload.len()));
    }
    let mut buf = BytesMut::with_capacity(LEN_PREFIX + payload.len());
    buf.put_u32(payload.len() as u32);
    buf.put_slice(&payload);
    Ok(buf.freeze())
}

/// Decode one message from the front of `buf` if a whole frame is there.
///
/// Returns `Ok(None)` when more bytes are needed (the buffer is left untouched), and consumes the
/// frame's bytes when it returns a message.
pub fn decode<T: DeserializeOwned>(buf: &mut BytesMut) -> Result<Option<T>, FrameError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    if buf.len() < LEN_PREFIX + len {
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    let payload = buf.split_to(len);
    Ok(Some(serde_json::from_slice(&payload)?))
}

/// Read exactly one frame from `reader`.
///
/// Reads only the frame's own bytes (no read-ahead), so the stream can be handed on afterwards
/// for raw byte splicing. `Ok(None)` on clean EOF before the frame starts.
pub async fn read_frame<T, R>(reader: &mut R) -> Result<Option<T>, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(Some(serde_json::from_slice(&payload)?))
}

/// Write one frame to `writer` and flush it.
pub async fn write_frame<T, W>(writer: &mut W, msg: &T) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let bytes = encode(msg)?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}
