//! Decompression on a thread of its own, a few blocks ahead of the parser, so
//! that reading a gzip file costs about the slower of the two rather than both.

use std::io::Read;

/// Reads `inner` on a thread of its own, a few blocks ahead of the caller, so
/// that decompressing overlaps parsing. The thread ends when the reader is dropped.
pub(super) struct ReadAhead {
    blocks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    block: Vec<u8>,
    position: usize,
}

impl ReadAhead {
    const BLOCK_BYTES: usize = 1 << 20;
    const BLOCKS_AHEAD: usize = 4;

    pub(super) fn new(mut inner: impl Read + Send + 'static) -> std::io::Result<Self> {
        let (tx, blocks) = std::sync::mpsc::sync_channel(Self::BLOCKS_AHEAD);
        let reading = move || {
            loop {
                let mut block = Vec::with_capacity(Self::BLOCK_BYTES);
                match (&mut inner).take(Self::BLOCK_BYTES as u64).read_to_end(&mut block) {
                    // The end of the input: the channel closes.
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.send(Ok(block)).is_err() {
                            return; // the reader was dropped
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        };
        std::thread::Builder::new().name("crs-read-ahead".into()).spawn(reading)?;
        Ok(ReadAhead { blocks, block: Vec::new(), position: 0 })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position == self.block.len() {
            match self.blocks.recv() {
                Ok(block) => (self.block, self.position) = (block?, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.position);
        buf[..n].copy_from_slice(&self.block[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}
