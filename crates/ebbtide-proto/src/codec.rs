//! The protobuf codec with small buffers.
//!
//! Why: a scheduler holds one Session stream per worker for as long as the
//! worker lives, and tonic's default codec reserves 8 KiB to encode and
//! 8 KiB to decode per stream. Worker messages are a few hundred bytes
//! (job output chunks are at most a few KiB and the buffers grow on
//! demand), so 1 KiB to start keeps a fleet of a thousand sessions from
//! pinning ~16 MiB of buffers that are almost never used.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Initial encode/decode buffer of a stream.
const BUFFER: usize = 1024;
/// How much an encoder buffers before it yields to the transport (tonic's
/// default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER`]-sized initial buffers.
#[derive(Debug, Clone, Copy)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        CompactCodec(PhantomData)
    }
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}
