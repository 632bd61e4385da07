// The vendored @msgpack/msgpack UMD build (vendor/msgpack/, loaded by index.html as a
// classic script) defines the global MessagePack; this module hands it to the ES modules
// so no other file depends on a global.
const lib = globalThis.MessagePack;
if (!lib) throw new Error("vendor/msgpack/msgpack.min.js was not loaded before the modules");

// Integers beyond 2^53 (arena seeds) decode as lossy Numbers: the viewer never needs them
// exactly, and BigInts would leak into every integer field.
export const decode = (bytes) => lib.decode(bytes);
export const encode = (value) => lib.encode(value);
