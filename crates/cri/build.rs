//! Compiles Kubernetes' CRI definition (proto/api.proto) into Rust with protox, a protobuf
//! compiler written in Rust, and tonic's code generator: no `protoc` on the build machine.

fn main() {
    let proto = "proto/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"]).unwrap_or_else(|e| {
        panic!("{proto} does not compile: {e}");
    });
    tonic_prost_build::configure()
        // The node agent and the tests are CRI clients only.
        .build_server(false)
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating the CRI client from {proto}: {e}"));
}
