//! Framing on top of rusmpp's PDU types.
//!
//! rusmpp's own `CommandCodec` ends the stream on the first PDU it cannot
//! decode (an SMSC sending a TLV with a value rusmpp does not accept would
//! kill the session). This codec frames by `command_length` first and decodes
//! each frame in isolation, so a malformed PDU becomes a [`Frame::Malformed`]
//! that the session can answer (generic_nack / `*_resp` with an error status)
//! while the connection stays up.

use bytes::{Buf, BufMut, BytesMut};
use rusmpp::{
    Command,
    decode::DecodeWithLength,
    encode::{Length, owned::Encode},
};
use tokio_util::codec::{Decoder, Encoder};

/// Smallest legal PDU: the 16 byte header.
const HEADER_LEN: usize = 16;

/// One decoded PDU, or the header of one that could not be decoded.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved once per PDU; boxing would allocate per PDU
pub enum Frame {
    /// A well-formed PDU.
    Command(Command),
    /// A PDU whose body did not decode; the header is still known.
    Malformed {
        /// `command_id` from the header.
        command_id: u32,
        /// `command_status` from the header.
        command_status: u32,
        /// `sequence_number` from the header.
        sequence_number: u32,
        /// The undecoded body (kept for submit_sm_resp only, else empty).
        body: bytes::Bytes,
        /// Why decoding failed.
        reason: String,
    },
}

/// Length-delimited SMPP codec over rusmpp's `Command`.
#[derive(Debug, Clone)]
pub struct SmppCodec {
    max_length: usize,
}

impl SmppCodec {
    /// A codec accepting PDUs up to `max_length` bytes.
    pub fn new(max_length: usize) -> Self {
        Self { max_length }
    }
}

impl Default for SmppCodec {
    fn default() -> Self {
        Self::new(64 * 1024)
    }
}

/// Errors that end a connection: I/O, or a length that cannot be framed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a command_length outside `16..=max`.
    #[error("invalid command_length {length} (max {max})")]
    InvalidLength {
        /// The announced length.
        length: usize,
        /// The configured maximum.
        max: usize,
    },
}

impl Decoder for SmppCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if !(HEADER_LEN..=self.max_length).contains(&length) {
            return Err(CodecError::InvalidLength {
                length,
                max: self.max_length,
            });
        }
        if src.len() < length {
            src.reserve(length - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(length);
        frame.advance(4);
        let command_id = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let command_status = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let sequence_number = u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
        // Kept only for submit_sm_resp (tiny), whose id is salvaged when the
        // body is not strictly valid.
        let body = if command_id == 0x8000_0004 {
            bytes::Bytes::copy_from_slice(&frame[12..])
        } else {
            bytes::Bytes::new()
        };
        match Command::decode(&mut frame, length - 4) {
            Ok((command, _)) => Ok(Some(Frame::Command(command))),
            Err(err) => Ok(Some(Frame::Malformed {
                command_id,
                command_status,
                sequence_number,
                body,
                reason: err.to_string(),
            })),
        }
    }
}

impl Encoder<&Command> for SmppCodec {
    type Error = CodecError;

    fn encode(&mut self, command: &Command, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_into(command, dst);
        Ok(())
    }
}

impl Encoder<Command> for SmppCodec {
    type Error = CodecError;

    fn encode(&mut self, command: Command, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_into(&command, dst);
        Ok(())
    }
}

/// Appends the wire form of `command` (length prefix included) to `dst`.
pub fn encode_into(command: &Command, dst: &mut BytesMut) {
    let len = 4 + command.length();
    dst.reserve(len);
    dst.put_u32(len as u32);
    command.encode(dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::{CommandStatus, Pdu};

    #[test]
    fn malformed_body_is_reported_without_ending_the_stream() {
        let mut codec = SmppCodec::default();
        let mut buf = BytesMut::new();
        // submit_sm_resp whose message_id is not NUL terminated.
        buf.put_u32(16 + 3);
        buf.put_u32(0x8000_0004);
        buf.put_u32(0);
        buf.put_u32(7);
        buf.put_slice(b"abc");
        encode_into(
            &Command::new(CommandStatus::EsmeRok, 8, Pdu::EnquireLink),
            &mut buf,
        );
        match codec.decode(&mut buf).unwrap() {
            Some(Frame::Malformed {
                command_id,
                sequence_number,
                ..
            }) => {
                assert_eq!(command_id, 0x8000_0004);
                assert_eq!(sequence_number, 7);
            }
            other => panic!("unexpected {other:?}"),
        }
        match codec.decode(&mut buf).unwrap() {
            Some(Frame::Command(c)) => assert_eq!(c.sequence_number(), 8),
            other => panic!("unexpected {other:?}"),
        }
    }
}
