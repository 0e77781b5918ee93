//! Kafka framing for the listener: the broker's framing is kafka-wire's (`[i32 size][request
//! header][body]` in, `[i32 size][response header][body]` out); this module re-exports it under
//! the broker's name and keeps the test that needs the broker's own handler table.
//!
//! Invariants (kafka-wire's): an incomplete frame is not an error; a negative or oversized
//! size, or a frame too short for the fixed header prefix, is (`FrameError`) and closes the
//! connection.

pub use kafka_wire::codec::{EncodeError, encode_response};
pub use kafka_wire::frame::{
    FrameError, HEADER_PREFIX_BYTES, HeaderPrefix, SIZE_PREFIX_BYTES, header_prefix, split_frame,
};

#[cfg(test)]
mod tests {
    mod decode_never_panics {
        use bytes::Bytes;
        use kafka_protocol::messages::*;
        use proptest::prelude::*;

        use crate::handlers::{HANDLERS, decode};

        /// Decodes `body` as the request type of `key`; the error text when it fails.
        fn decode_as(key: ApiKey, version: i16, body: Bytes) -> Result<(), String> {
            macro_rules! try_types {
                ($($k:ident => $t:ty),* $(,)?) => {
                    match key {
                        $(ApiKey::$k => decode::<$t>(body, version).map(|_| ()),)*
                        _ => Ok(()),
                    }
                };
            }
            try_types! {
                Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
                Metadata => MetadataRequest, ApiVersions => ApiVersionsRequest,
                CreateTopics => CreateTopicsRequest, DeleteTopics => DeleteTopicsRequest,
                DeleteRecords => DeleteRecordsRequest, InitProducerId => InitProducerIdRequest,
                OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
                DescribeConfigs => DescribeConfigsRequest, AlterConfigs => AlterConfigsRequest,
                DescribeLogDirs => DescribeLogDirsRequest, CreatePartitions => CreatePartitionsRequest,
                IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
                DescribeCluster => DescribeClusterRequest,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Random bytes after a valid (key, version): the decoder returns an error or a
            /// value, never panics (a panic would be caught, but is a bug to report upstream).
            #[test]
            fn request_bodies(which in 0usize..64, version_pick in 0i16..64, body in proptest::collection::vec(any::<u8>(), 0..300)) {
                let (key, v) = HANDLERS[which % HANDLERS.len()];
                let version = v.min + version_pick % (v.max - v.min + 1);
                let r = decode_as(key, version, Bytes::from(body));
                prop_assert!(r.as_ref().err().is_none_or(|e| e != "decoder panicked"), "{key:?} v{version}: {r:?}");
            }
        }
    }
}
