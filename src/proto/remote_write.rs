//! Prometheus Remote Write 1.0 messages (package `prometheus`, `remote.proto` and `types.proto`),
//! field numbers as upstream. The sink encodes requests by hand (see `sinks::remote_write::encode`,
//! measured faster than building these messages); these types are the reference the encoder is
//! tested against and what tests decode with. Exemplars, native histograms and metadata are not
//! sent by sluice and are left out.

/// `WriteRequest { repeated TimeSeries timeseries = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `Label { string name = 1; string value = 2; }`
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `Sample { double value = 1; int64 timestamp = 2; }` (milliseconds)
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}
