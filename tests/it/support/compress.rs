//! Compressing test bodies, as `gzip` and Python's `zlib.compress` do.

use std::io::Write as _;

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    zlib_at(data, 6)
}

/// `zlib.compress(data, level)`: levels 2 to 5 write the header `78 5e`.
pub fn zlib_at(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
