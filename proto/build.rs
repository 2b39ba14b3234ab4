fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Record payloads decode as `Bytes` slices of the received frame: no copy per record.
        .bytes(".kmirror.v1")
        .compile_protos(
            &[
                "proto/kmirror/v1/replicate.proto",
                "proto/kmirror/v1/admin.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
