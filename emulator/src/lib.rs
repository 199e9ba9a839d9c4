//! The proxy-wasm host, emulated: [`Module`] runs the built module
//! (`traffic_mirror.wasm`) in the `wasmi` interpreter and answers each of its imports with
//! the core's [`FakeHost`], so that the scenario tests drive the very module Envoy loads
//! through [`Envoy`](traffic_mirror_core::testing::Envoy), without Envoy:
//!
//! ```no_run
//! use traffic_mirror_core::testing::Envoy;
//! use traffic_mirror_emulator::Module;
//!
//! let mut envoy = Envoy::new(Module::built());
//! let configuration = r#"{"targets": [{"name": "a", "cluster": "mirror", "percent": 100}]}"#;
//! assert!(envoy.configure(1, configuration));
//! ```
//!
//! The imports (module `env`, the proxy-wasm ABI 0.2.1) decode their arguments from the
//! module's memory, call the matching [`Host`] method and encode its answer as the ABI
//! does: status 0 for OK, else [`Status::code`]; bytes handed back (a header's value, a
//! serialized header map, a buffer's bytes) are written into memory the module allocates
//! with its export `proxy_on_memory_allocate`, their pointer and size into the
//! out-parameters (a null pointer for no bytes, as Envoy does). The few WASI functions
//! Rust's std asks for (module `wasi_snapshot_preview1`) are answered deterministically.
//!
//! A trap is a test failure: a callback that traps panics with the trap, what the module
//! wrote to stdout and stderr, and the end of its log. So does a contract violation: a
//! request callback that does not return Continue; a malformed header map, trailers on a
//! call, a pointer out of bounds, each of which traps the module.

use std::path::{Path, PathBuf};

use traffic_mirror_core::host::{BufferType, Host, LogLevel, MapType, MetricType, Status};
use traffic_mirror_core::testing::{Exports, FakeHost};
use traffic_mirror_core::wire;
use wasmi::{
    Caller, Config, Engine, Error, Extern, Instance, IntoFunc, Linker, Memory, Store, TypedFunc,
    WasmParams, WasmResults,
};

/// The ABI's status OK.
const OK: u32 = 0;
/// WASI's errno for success.
const ERRNO_SUCCESS: u32 = 0;
/// WASI's errno for a bad file descriptor.
const ERRNO_BADF: u32 = 8;
/// The fuel the store starts with: enough never to run out.
const FUEL: u64 = u64::MAX;
/// How many of the last log lines a trap's panic message shows.
const LOG_TAIL: usize = 40;

/// What the emulated host holds: the fake host the tests look at, and the WASI side.
struct State {
    /// The proxy-wasm host.
    host: FakeHost,
    /// Everything the module wrote to stdout and stderr (fd 1 and 2), in order.
    stdio: Vec<u8>,
    /// How many bytes `random_get` has handed out.
    random_drawn: u64,
}

impl State {
    /// The next `len` bytes of the deterministic random stream: little-endian words,
    /// the first [`FakeHost::seed`] itself (so a module that takes its seed as the first
    /// 8 bytes gets exactly the fake host's), then SplitMix64 of the seed.
    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        let seed = self.host.seed;
        let start = self.random_drawn;
        self.random_drawn = start.saturating_add(len as u64);
        let skip = usize::try_from(start % 8).unwrap_or(0);
        (start / 8..)
            .flat_map(|index| random_word(seed, index).to_le_bytes())
            .skip(skip)
            .take(len)
            .collect()
    }
}

/// Word `index` of the random stream seeded by `seed` (see [`State::random_bytes`]).
fn random_word(seed: u64, index: u64) -> u64 {
    if index == 0 {
        return seed;
    }
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `proxy_on_http_call_response(root, token, headers, body_size, trailers)`.
type HttpCallResponse = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The proxy-wasm callbacks the module exports (a callback it does not export is
/// skipped, as Envoy skips it, with Envoy's default answer).
struct Callbacks {
    context_create: Option<TypedFunc<(u32, u32), ()>>,
    vm_start: Option<TypedFunc<(u32, u32), u32>>,
    configure: Option<TypedFunc<(u32, u32), u32>>,
    request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    http_call_response: Option<HttpCallResponse>,
    done: Option<TypedFunc<u32, u32>>,
}

/// The built module, instantiated in the interpreter with its imports answered by a
/// [`FakeHost`]; implements [`Exports`], so [`Envoy`](traffic_mirror_core::testing::Envoy)
/// drives it as it drives the core natively.
pub struct Module {
    store: Store<State>,
    memory: Memory,
    callbacks: Callbacks,
}

impl Module {
    /// Loads, links and initializes the module at `path` (see [`Module::from_bytes`]).
    pub fn load(path: &Path) -> Result<Module, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Module::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Compiles a module, checks that it speaks the proxy-wasm ABI 0.2.1 and imports
    /// nothing the emulator does not provide (the error names each such import),
    /// instantiates it with a new [`FakeHost`] and runs its `_initialize` (WASI reactor).
    pub fn from_bytes(wasm: &[u8]) -> Result<Module, String> {
        let mut config = Config::default();
        config.consume_fuel(true);
        let engine = Engine::new(&config);
        let module =
            wasmi::Module::new(&engine, wasm).map_err(|e| format!("not a valid module: {e}"))?;
        if module.get_export("proxy_abi_version_0_2_1").is_none() {
            return Err("the module does not export proxy_abi_version_0_2_1: \
                        not a proxy-wasm ABI 0.2.1 module"
                .to_string());
        }
        let mut imports = Imports::new(&engine);
        imports
            .define_all()
            .map_err(|e| format!("defining the imports: {e}"))?;
        let unknown: Vec<String> = module
            .imports()
            .filter(|import| !imports.provides(import.module(), import.name()))
            .map(|import| format!("{}::{}", import.module(), import.name()))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "the module imports what the emulator does not provide: {}",
                unknown.join(", ")
            ));
        }
        let state = State {
            host: FakeHost::new(),
            stdio: Vec::new(),
            random_drawn: 0,
        };
        let mut store = Store::new(&engine, state);
        store
            .set_fuel(FUEL)
            .map_err(|e| format!("setting the fuel: {e}"))?;
        let instance = imports
            .linker
            .instantiate_and_start(&mut store, &module)
            .map_err(|e| format!("instantiating: {e}"))?;
        let memory = instance
            .get_memory(&store, "memory")
            .ok_or("the module exports no memory")?;
        export::<u32, u32>(&store, instance, "proxy_on_memory_allocate")?
            .ok_or("the module does not export proxy_on_memory_allocate")?;
        let callbacks = Callbacks {
            context_create: export(&store, instance, "proxy_on_context_create")?,
            vm_start: export(&store, instance, "proxy_on_vm_start")?,
            configure: export(&store, instance, "proxy_on_configure")?,
            request_headers: export(&store, instance, "proxy_on_request_headers")?,
            request_body: export(&store, instance, "proxy_on_request_body")?,
            request_trailers: export(&store, instance, "proxy_on_request_trailers")?,
            response_headers: export(&store, instance, "proxy_on_response_headers")?,
            response_body: export(&store, instance, "proxy_on_response_body")?,
            response_trailers: export(&store, instance, "proxy_on_response_trailers")?,
            http_call_response: export(&store, instance, "proxy_on_http_call_response")?,
            done: export(&store, instance, "proxy_on_done")?,
        };
        if let Some(initialize) = export::<(), ()>(&store, instance, "_initialize")? {
            if let Err(trap) = initialize.call(&mut store, ()) {
                return Err(format!(
                    "_initialize trapped: {trap}{}",
                    report(store.data())
                ));
            }
        }
        Ok(Module {
            store,
            memory,
            callbacks,
        })
    }

    /// The module as `cargo build --target wasm32-wasip1 --release` built it:
    /// `<workspace>/target/wasm32-wasip1/release/traffic_mirror.wasm` (or under
    /// `$CARGO_TARGET_DIR`). For tests: panics, saying how to build it, when it is
    /// missing or does not load.
    // A test helper: a missing module is the test's failure, with the command to fix it.
    #[allow(clippy::panic)]
    pub fn built() -> Module {
        let path = built_path();
        if !path.exists() {
            panic!(
                "{} is missing: build it first with \
                 `cargo build --target wasm32-wasip1 --release` in the workspace",
                path.display()
            );
        }
        match Module::load(&path) {
            Ok(module) => module,
            Err(e) => panic!("loading the built module: {e}"),
        }
    }

    /// Everything the module wrote to stdout and stderr so far (Rust's default panic
    /// hook writes to stderr; this module's own hook logs the panic instead).
    pub fn stdio(&self) -> String {
        String::from_utf8_lossy(&self.store.data().stdio).into_owned()
    }

    /// The fuel the module has consumed since it was loaded (`_initialize` included):
    /// wasmi's measure of the instructions it executed, allocations for the host's
    /// answers included. The difference across a callback is that callback's own work.
    pub fn fuel_consumed(&self) -> u64 {
        FUEL.saturating_sub(self.store.get_fuel().unwrap_or(FUEL))
    }

    /// The size of the module's linear memory now, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Calls callback `name` (with `args`, for the message); a trap is the test's
    /// failure.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        func: TypedFunc<P, R>,
        params: P,
        name: &str,
        args: &[u32],
    ) -> R {
        match func.call(&mut self.store, params) {
            Ok(results) => results,
            Err(trap) => self.failed(name, args, &format!("trapped: {trap}")),
        }
    }

    /// A request callback's answer: it must be Continue (0).
    fn continued(&self, action: u32, name: &str, args: &[u32]) {
        if action != 0 {
            self.failed(
                name,
                args,
                &format!("returned {action}, not Continue (0): the filter never pauses a request"),
            );
        }
    }

    /// Fails the test: callback `name` broke the contract or trapped.
    // The emulator's failures are the tests' failures: a panic is how a test fails.
    #[allow(clippy::panic)]
    fn failed(&self, name: &str, args: &[u32], what: &str) -> ! {
        let args: Vec<String> = args.iter().map(u32::to_string).collect();
        panic!(
            "{name}({}) {what}{}",
            args.join(", "),
            report(self.store.data())
        )
    }
}

/// What the module left behind, for a failure's message: its stdout and stderr, and
/// the end of its log.
fn report(state: &State) -> String {
    let mut out = String::new();
    let stdio = String::from_utf8_lossy(&state.stdio);
    if !stdio.is_empty() {
        out.push_str("\n--- stdout/stderr:\n");
        out.push_str(&stdio);
    }
    let lines: Vec<(LogLevel, &str)> = state.host.log_lines().collect();
    if !lines.is_empty() {
        let skipped = lines.len().saturating_sub(LOG_TAIL);
        out.push_str("\n--- log");
        if skipped > 0 {
            out.push_str(&format!(" ({skipped} earlier lines left out)"));
        }
        out.push_str(":\n");
        for (level, line) in lines.iter().skip(skipped) {
            out.push_str(&format!("{level:?}: {line}\n"));
        }
    }
    out
}

/// Where `cargo build --target wasm32-wasip1 --release` writes the module.
fn built_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .unwrap_or(manifest);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .unwrap_or_else(|| workspace.join("target"));
    target
        .join("wasm32-wasip1")
        .join("release")
        .join("traffic_mirror.wasm")
}

/// Export `name` as a function of this type; `None` when the module does not export
/// it, an error when it exports it with another type.
fn export<P: WasmParams, R: WasmResults>(
    store: &Store<State>,
    instance: Instance,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, String> {
    instance
        .get_func(store, name)
        .map(|func| {
            func.typed::<P, R>(store)
                .map_err(|e| format!("export {name} has an unexpected type: {e}"))
        })
        .transpose()
}

/// A size or a count, as the ABI passes it (wasm32: 32 bits).
// A size beyond 4 GiB cannot reach a wasm32 module: the test itself is wrong.
#[allow(clippy::panic)]
fn abi_size(size: usize) -> u32 {
    u32::try_from(size).unwrap_or_else(|_| panic!("size {size} does not fit wasm32"))
}

impl Exports for Module {
    fn host(&mut self) -> &mut FakeHost {
        &mut self.store.data_mut().host
    }

    fn on_context_create(&mut self, context: u32, parent: u32) {
        if let Some(func) = self.callbacks.context_create {
            let args = [context, parent];
            self.call(func, (context, parent), "proxy_on_context_create", &args);
        }
    }

    fn on_vm_start(&mut self, root: u32, vm_configuration_size: usize) -> bool {
        let Some(func) = self.callbacks.vm_start else {
            return true;
        };
        let args = [root, abi_size(vm_configuration_size)];
        self.call(func, (args[0], args[1]), "proxy_on_vm_start", &args) != 0
    }

    fn on_configure(&mut self, root: u32, configuration_size: usize) -> bool {
        let Some(func) = self.callbacks.configure else {
            return true;
        };
        let args = [root, abi_size(configuration_size)];
        self.call(func, (args[0], args[1]), "proxy_on_configure", &args) != 0
    }

    fn on_request_headers(&mut self, context: u32, headers: usize, end_of_stream: bool) {
        if let Some(func) = self.callbacks.request_headers {
            let name = "proxy_on_request_headers";
            let args = [context, abi_size(headers), u32::from(end_of_stream)];
            let action = self.call(func, (args[0], args[1], args[2]), name, &args);
            self.continued(action, name, &args);
        }
    }

    fn on_request_body(&mut self, context: u32, body_size: usize, end_of_stream: bool) {
        if let Some(func) = self.callbacks.request_body {
            let name = "proxy_on_request_body";
            let args = [context, abi_size(body_size), u32::from(end_of_stream)];
            let action = self.call(func, (args[0], args[1], args[2]), name, &args);
            self.continued(action, name, &args);
        }
    }

    fn on_request_trailers(&mut self, context: u32, trailers: usize) {
        if let Some(func) = self.callbacks.request_trailers {
            let name = "proxy_on_request_trailers";
            let args = [context, abi_size(trailers)];
            let action = self.call(func, (args[0], args[1]), name, &args);
            self.continued(action, name, &args);
        }
    }

    fn on_response_headers(&mut self, context: u32, headers: usize, end_of_stream: bool) {
        if let Some(func) = self.callbacks.response_headers {
            let name = "proxy_on_response_headers";
            let args = [context, abi_size(headers), u32::from(end_of_stream)];
            let action = self.call(func, (args[0], args[1], args[2]), name, &args);
            self.continued(action, name, &args);
        }
    }

    fn on_response_body(&mut self, context: u32, body_size: usize, end_of_stream: bool) {
        if let Some(func) = self.callbacks.response_body {
            let name = "proxy_on_response_body";
            let args = [context, abi_size(body_size), u32::from(end_of_stream)];
            let action = self.call(func, (args[0], args[1], args[2]), name, &args);
            self.continued(action, name, &args);
        }
    }

    fn on_response_trailers(&mut self, context: u32, trailers: usize) {
        if let Some(func) = self.callbacks.response_trailers {
            let name = "proxy_on_response_trailers";
            let args = [context, abi_size(trailers)];
            let action = self.call(func, (args[0], args[1]), name, &args);
            self.continued(action, name, &args);
        }
    }

    fn on_http_call_response(
        &mut self,
        root: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        if let Some(func) = self.callbacks.http_call_response {
            let args = [
                root,
                token,
                abi_size(headers),
                abi_size(body_size),
                abi_size(trailers),
            ];
            let params = (args[0], args[1], args[2], args[3], args[4]);
            self.call(func, params, "proxy_on_http_call_response", &args);
        }
    }

    fn on_done(&mut self, context: u32) -> bool {
        let Some(func) = self.callbacks.done else {
            return true;
        };
        self.call(func, context, "proxy_on_done", &[context]) != 0
    }
}

/// The host functions, in a linker, and the names of those defined.
struct Imports {
    linker: Linker<State>,
    defined: Vec<(&'static str, &'static str)>,
}

impl Imports {
    fn new(engine: &Engine) -> Self {
        Imports {
            linker: Linker::new(engine),
            defined: Vec::new(),
        }
    }

    /// Whether `module::name` is defined.
    fn provides(&self, module: &str, name: &str) -> bool {
        self.defined.iter().any(|&(m, n)| m == module && n == name)
    }

    fn define<Params, Args>(
        &mut self,
        module: &'static str,
        name: &'static str,
        func: impl IntoFunc<State, Params, Args>,
    ) -> Result<(), Error> {
        self.linker.func_wrap(module, name, func)?;
        self.defined.push((module, name));
        Ok(())
    }

    /// Every host function the emulator provides.
    fn define_all(&mut self) -> Result<(), Error> {
        self.define("env", "proxy_log", proxy_log)?;
        self.define(
            "env",
            "proxy_get_current_time_nanoseconds",
            proxy_get_current_time_nanoseconds,
        )?;
        self.define(
            "env",
            "proxy_get_header_map_pairs",
            proxy_get_header_map_pairs,
        )?;
        self.define(
            "env",
            "proxy_get_header_map_value",
            proxy_get_header_map_value,
        )?;
        self.define(
            "env",
            "proxy_replace_header_map_value",
            proxy_replace_header_map_value,
        )?;
        self.define(
            "env",
            "proxy_remove_header_map_value",
            proxy_remove_header_map_value,
        )?;
        self.define("env", "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
        self.define("env", "proxy_http_call", proxy_http_call)?;
        self.define("env", "proxy_define_metric", proxy_define_metric)?;
        self.define("env", "proxy_increment_metric", proxy_increment_metric)?;
        self.define("env", "proxy_record_metric", proxy_record_metric)?;
        self.define("env", "proxy_done", proxy_done)?;
        const WASI: &str = "wasi_snapshot_preview1";
        self.define(WASI, "random_get", random_get)?;
        self.define(WASI, "environ_sizes_get", environ_sizes_get)?;
        self.define(WASI, "environ_get", environ_get)?;
        self.define(WASI, "fd_write", fd_write)?;
        self.define(WASI, "proc_exit", proc_exit)?;
        Ok(())
    }
}

// --- The module's memory. A pointer out of bounds traps the module (its bug).

/// A pointer or a size from the module, as an offset into its memory.
fn offset(value: u32) -> usize {
    // wasm32 offsets fit in usize on every host the tests run on; saturating makes an
    // impossible one out of bounds rather than wrong.
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn memory(caller: &Caller<'_, State>) -> Result<Memory, Error> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| Error::new("the module exports no memory"))
}

/// `size` bytes of the module's memory at `pointer`.
fn read(caller: &Caller<'_, State>, pointer: u32, size: u32) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0; offset(size)];
    memory(caller)?
        .read(caller, offset(pointer), &mut bytes)
        .map_err(|e| Error::new(format!("reading {size} bytes at {pointer:#x}: {e}")))?;
    Ok(bytes)
}

/// A UTF-8 string from the module's memory; `None` when it is not UTF-8.
fn read_str(caller: &Caller<'_, State>, pointer: u32, size: u32) -> Result<Option<String>, Error> {
    Ok(String::from_utf8(read(caller, pointer, size)?).ok())
}

fn write(caller: &mut Caller<'_, State>, pointer: u32, bytes: &[u8]) -> Result<(), Error> {
    memory(caller)?
        .write(&mut *caller, offset(pointer), bytes)
        .map_err(|e| {
            Error::new(format!(
                "writing {} bytes at {pointer:#x}: {e}",
                bytes.len()
            ))
        })
}

fn write_u32(caller: &mut Caller<'_, State>, pointer: u32, value: u32) -> Result<(), Error> {
    write(caller, pointer, &value.to_le_bytes())
}

/// Hands bytes to the module as Envoy does: in memory it allocates with
/// `proxy_on_memory_allocate` (none for no bytes: a null pointer), their pointer and
/// size written to the out-parameters.
fn hand_over(
    caller: &mut Caller<'_, State>,
    bytes: &[u8],
    pointer_out: u32,
    size_out: u32,
) -> Result<(), Error> {
    let size = u32::try_from(bytes.len())
        .map_err(|_| Error::new(format!("{} bytes do not fit wasm32", bytes.len())))?;
    let pointer = if bytes.is_empty() {
        0
    } else {
        let allocate = caller
            .get_export("proxy_on_memory_allocate")
            .and_then(Extern::into_func)
            .ok_or_else(|| Error::new("the module does not export proxy_on_memory_allocate"))?
            .typed::<u32, u32>(&*caller)?;
        let pointer = allocate.call(&mut *caller, size)?;
        if pointer == 0 {
            return Err(Error::new(format!(
                "proxy_on_memory_allocate({size}) returned null"
            )));
        }
        write(caller, pointer, bytes)?;
        pointer
    };
    write_u32(caller, pointer_out, pointer)?;
    write_u32(caller, size_out, size)
}

/// A host call's result as the ABI's status.
fn status(result: Result<(), Status>) -> u32 {
    match result {
        Ok(()) => OK,
        Err(status) => status.code(),
    }
}

fn bad_argument() -> Result<u32, Error> {
    Ok(Status::BadArgument.code())
}

// --- The proxy-wasm ABI 0.2.1 (module "env").

fn proxy_log(
    mut caller: Caller<'_, State>,
    level: u32,
    message: u32,
    size: u32,
) -> Result<u32, Error> {
    let Some(level) = LogLevel::from_abi(level) else {
        return bad_argument();
    };
    let message = read(&caller, message, size)?;
    let message = String::from_utf8_lossy(&message);
    Host::log(&mut caller.data_mut().host, level, &message);
    Ok(OK)
}

fn proxy_get_current_time_nanoseconds(
    mut caller: Caller<'_, State>,
    time: u32,
) -> Result<u32, Error> {
    match caller.data_mut().host.now_nanos() {
        Ok(now) => {
            write(&mut caller, time, &now.to_le_bytes())?;
            Ok(OK)
        }
        Err(status) => Ok(status.code()),
    }
}

fn proxy_get_header_map_pairs(
    mut caller: Caller<'_, State>,
    map: u32,
    data: u32,
    size: u32,
) -> Result<u32, Error> {
    let Some(map) = MapType::from_abi(map) else {
        return bad_argument();
    };
    match caller.data_mut().host.header_map(map) {
        Ok(pairs) => {
            hand_over(&mut caller, &pairs, data, size)?;
            Ok(OK)
        }
        Err(status) => Ok(status.code()),
    }
}

fn proxy_get_header_map_value(
    mut caller: Caller<'_, State>,
    map: u32,
    key: u32,
    key_size: u32,
    value: u32,
    value_size: u32,
) -> Result<u32, Error> {
    let (Some(map), Some(key)) = (MapType::from_abi(map), read_str(&caller, key, key_size)?) else {
        return bad_argument();
    };
    match caller.data_mut().host.header(map, &key) {
        Ok(Some(found)) => {
            hand_over(&mut caller, &found, value, value_size)?;
            Ok(OK)
        }
        Ok(None) => Ok(Status::NotFound.code()),
        Err(status) => Ok(status.code()),
    }
}

fn proxy_replace_header_map_value(
    mut caller: Caller<'_, State>,
    map: u32,
    key: u32,
    key_size: u32,
    value: u32,
    value_size: u32,
) -> Result<u32, Error> {
    let (Some(map), Some(key)) = (MapType::from_abi(map), read_str(&caller, key, key_size)?) else {
        return bad_argument();
    };
    let value = read(&caller, value, value_size)?;
    Ok(status(
        caller.data_mut().host.replace_header(map, &key, &value),
    ))
}

fn proxy_remove_header_map_value(
    mut caller: Caller<'_, State>,
    map: u32,
    key: u32,
    key_size: u32,
) -> Result<u32, Error> {
    let (Some(map), Some(key)) = (MapType::from_abi(map), read_str(&caller, key, key_size)?) else {
        return bad_argument();
    };
    Ok(status(caller.data_mut().host.remove_header(map, &key)))
}

fn proxy_get_buffer_bytes(
    mut caller: Caller<'_, State>,
    buffer: u32,
    start: u32,
    max_size: u32,
    data: u32,
    size: u32,
) -> Result<u32, Error> {
    let Some(buffer) = BufferType::from_abi(buffer) else {
        return bad_argument();
    };
    match caller
        .data_mut()
        .host
        .buffer(buffer, offset(start), offset(max_size))
    {
        Ok(bytes) => {
            hand_over(&mut caller, &bytes, data, size)?;
            Ok(OK)
        }
        Err(status) => Ok(status.code()),
    }
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
fn proxy_http_call(
    mut caller: Caller<'_, State>,
    upstream: u32,
    upstream_size: u32,
    headers: u32,
    headers_size: u32,
    body: u32,
    body_size: u32,
    trailers: u32,
    trailers_size: u32,
    timeout_ms: u32,
    token_out: u32,
) -> Result<u32, Error> {
    let Some(cluster) = read_str(&caller, upstream, upstream_size)? else {
        return bad_argument();
    };
    let headers = read(&caller, headers, headers_size)?;
    if wire::parse(&headers).is_none() {
        return Err(Error::new(format!(
            "proxy_http_call to {cluster}: malformed header map ({} bytes)",
            headers.len()
        )));
    }
    let body = read(&caller, body, body_size)?;
    let trailers = read(&caller, trailers, trailers_size)?;
    if !wire::parse(&trailers).is_some_and(|pairs| pairs.is_empty()) {
        return Err(Error::new(format!(
            "proxy_http_call to {cluster}: the trailers are not the empty map ({} bytes)",
            trailers.len()
        )));
    }
    match caller
        .data_mut()
        .host
        .http_call(&cluster, &headers, &body, timeout_ms)
    {
        Ok(token) => {
            write_u32(&mut caller, token_out, token)?;
            Ok(OK)
        }
        Err(status) => Ok(status.code()),
    }
}

fn proxy_define_metric(
    mut caller: Caller<'_, State>,
    kind: u32,
    name: u32,
    name_size: u32,
    id_out: u32,
) -> Result<u32, Error> {
    let (Some(kind), Some(name)) = (
        MetricType::from_abi(kind),
        read_str(&caller, name, name_size)?,
    ) else {
        return bad_argument();
    };
    match caller.data_mut().host.define_metric(kind, &name) {
        Ok(id) => {
            write_u32(&mut caller, id_out, id)?;
            Ok(OK)
        }
        Err(status) => Ok(status.code()),
    }
}

fn proxy_increment_metric(
    mut caller: Caller<'_, State>,
    id: u32,
    offset: i64,
) -> Result<u32, Error> {
    Ok(status(caller.data_mut().host.increment_metric(id, offset)))
}

fn proxy_record_metric(mut caller: Caller<'_, State>, id: u32, value: u64) -> Result<u32, Error> {
    Ok(status(caller.data_mut().host.record_metric(id, value)))
}

fn proxy_done(mut caller: Caller<'_, State>) -> Result<u32, Error> {
    Ok(status(caller.data_mut().host.done()))
}

// --- WASI (module "wasi_snapshot_preview1"): what Rust's std asks for.

/// Fills the buffer from the deterministic stream seeded by [`FakeHost::seed`].
fn random_get(mut caller: Caller<'_, State>, buffer: u32, size: u32) -> Result<u32, Error> {
    let bytes = caller.data_mut().random_bytes(offset(size));
    write(&mut caller, buffer, &bytes)?;
    Ok(ERRNO_SUCCESS)
}

/// No environment variables.
fn environ_sizes_get(mut caller: Caller<'_, State>, count: u32, size: u32) -> Result<u32, Error> {
    write_u32(&mut caller, count, 0)?;
    write_u32(&mut caller, size, 0)?;
    Ok(ERRNO_SUCCESS)
}

/// No environment variables: nothing to write.
fn environ_get(_caller: Caller<'_, State>, _environ: u32, _buffer: u32) -> Result<u32, Error> {
    Ok(ERRNO_SUCCESS)
}

/// Keeps what is written to stdout and stderr ([`Module::stdio`]); any other descriptor
/// is a bad one.
fn fd_write(
    mut caller: Caller<'_, State>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    written_out: u32,
) -> Result<u32, Error> {
    if fd != 1 && fd != 2 {
        return Ok(ERRNO_BADF);
    }
    let vectors = read(&caller, iovs, iovs_len.saturating_mul(8))?;
    let mut written: u32 = 0;
    for vector in vectors.chunks_exact(8) {
        let word = |at: usize| {
            vector
                .get(at..at + 4)
                .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
                .map_or(0, u32::from_le_bytes)
        };
        let bytes = read(&caller, word(0), word(4))?;
        written = written.saturating_add(word(4));
        caller.data_mut().stdio.extend_from_slice(&bytes);
    }
    write_u32(&mut caller, written_out, written)?;
    Ok(ERRNO_SUCCESS)
}

/// The module exits: a trap, reported with its exit code.
fn proc_exit(_caller: Caller<'_, State>, code: u32) -> Result<(), Error> {
    Err(Error::i32_exit(i32::from_ne_bytes(code.to_ne_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffic_mirror_core::testing::{Envoy, FakeAnswer};

    const CONFIG: &str = r#"{"targets": [{"name": "a", "cluster": "mirror", "percent": 100, "sample_by": {"header": "x-user-id"}}]}"#;

    const GET: &[(&str, &str)] = &[
        (":method", "GET"),
        (":path", "/p"),
        (":authority", "h"),
        ("x-user-id", "u1"),
    ];

    #[test]
    fn mirrors_a_request_and_counts_its_answer() {
        let mut envoy = Envoy::new(Module::built());
        assert!(envoy.configure(1, CONFIG), "{:?}", envoy.host().calls);
        envoy.complete(1, GET, &[]);
        let sent = envoy.host().sent.clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        let call = &sent[0];
        assert_eq!(call.cluster, "mirror");
        assert_eq!(call.header("x-traffic-mirror"), Some(&b"a"[..]), "{call:?}");
        assert_eq!(
            call.header(":authority"),
            Some(&b"h-shadow"[..]),
            "{call:?}"
        );
        assert_eq!(envoy.host().target_stat("a", "in_flight"), 1);

        envoy.answer(call.token, FakeAnswer::status(200), 0);
        assert_eq!(envoy.host().stat("traffic_mirror.a.responses_2xx"), 1);
        assert_eq!(envoy.host().stat("traffic_mirror.a.in_flight"), 0);
        assert!(envoy.filter.fuel_consumed() > 0);
        assert!(envoy.filter.memory_bytes() >= 65536);
        assert_eq!(envoy.filter.stdio(), "");
    }

    /// The scenario above, on any filter: the calls it made to the host.
    fn scenario<E: Exports>(filter: E) -> Vec<String> {
        let mut envoy = Envoy::new(filter);
        assert!(envoy.configure(1, CONFIG));
        envoy.complete(1, GET, &[]);
        let token = envoy.host().sent[0].token;
        envoy.answer(token, FakeAnswer::status(503), 0);
        envoy.host().calls_since(0)
    }

    #[test]
    fn the_module_makes_the_calls_the_core_makes() {
        let native = scenario(traffic_mirror_core::lifecycle::Vm::new(FakeHost::new()));
        assert_eq!(scenario(Module::built()), native);
    }

    #[test]
    fn a_bad_configuration_is_refused_and_logged() {
        let mut envoy = Envoy::new(Module::built());
        assert!(!envoy.configure(1, r#"{"targets": []}"#));
        let host = envoy.host();
        assert!(
            host.log_lines()
                .any(|(_, line)| line.starts_with("traffic-mirror: invalid configuration:")),
            "{:?}",
            host.calls
        );
    }

    #[test]
    fn the_same_scenario_costs_the_same_fuel() {
        let run = || {
            let mut envoy = Envoy::new(Module::built());
            assert!(envoy.configure(1, CONFIG));
            let before = envoy.filter.fuel_consumed();
            envoy.complete(1, GET, &[]);
            envoy.filter.fuel_consumed() - before
        };
        let fuel = run();
        assert!(fuel > 0);
        assert_eq!(fuel, run(), "the module is deterministic in the emulator");
    }

    #[test]
    fn host_failures_come_back_as_statuses() {
        let mut envoy = Envoy::new(Module::built());
        assert!(envoy.configure(1, CONFIG));
        envoy.host().refuse = Some(Status::InternalFailure);
        envoy.complete(1, GET, &[]);
        assert!(envoy.host().sent.is_empty());
        assert_eq!(envoy.host().target_stat("a", "dispatch_failed"), 1);
        assert_eq!(envoy.host().target_stat("a", "in_flight"), 0);
    }

    #[test]
    fn random_bytes_start_with_the_seed_and_are_deterministic() {
        let mut state = State {
            host: FakeHost::new(),
            stdio: Vec::new(),
            random_drawn: 0,
        };
        let first = state.random_bytes(3);
        let rest = state.random_bytes(13);
        let mut again = State {
            host: FakeHost::new(),
            stdio: Vec::new(),
            random_drawn: 0,
        };
        let all = again.random_bytes(16);
        assert_eq!([first, rest].concat(), all);
        assert_eq!(all[..8], 7u64.to_le_bytes());
    }

    #[test]
    fn a_module_without_the_abi_export_is_refused() {
        // (module) — the smallest valid module: magic and version.
        let error = Module::from_bytes(b"\0asm\x01\0\0\0").err().unwrap();
        assert!(error.contains("proxy_abi_version_0_2_1"), "{error}");
    }

    #[test]
    fn unknown_imports_are_named() {
        // (module (import "env" "proxy_set_effective_context" (func (param i32) (result i32)))
        //         (func (export "proxy_abi_version_0_2_1")))
        let wasm = module_importing("env", "proxy_set_effective_context");
        let error = Module::from_bytes(&wasm).err().unwrap();
        assert!(
            error.contains("env::proxy_set_effective_context"),
            "{error}"
        );
    }

    #[test]
    #[should_panic(expected = "proxy_on_context_create(1, 0) trapped")]
    fn a_trap_fails_the_test() {
        // (module (memory (export "memory") 1)
        //   (func (export "proxy_abi_version_0_2_1"))
        //   (func (export "proxy_on_context_create") (param i32 i32) unreachable)
        //   (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend([
            1, 14, 3, 0x60, 0, 0, 0x60, 2, 0x7f, 0x7f, 0, 0x60, 1, 0x7f, 1, 0x7f,
        ]);
        wasm.extend([3, 4, 3, 0, 1, 2]);
        wasm.extend([5, 3, 1, 0, 1]);
        let mut exports = vec![4];
        for (name, kind, index) in [
            ("memory", 2, 0),
            ("proxy_abi_version_0_2_1", 0, 0),
            ("proxy_on_context_create", 0, 1),
            ("proxy_on_memory_allocate", 0, 2),
        ] {
            exports.push(u8::try_from(name.len()).unwrap());
            exports.extend(name.as_bytes());
            exports.extend([kind, index]);
        }
        wasm.extend([7, u8::try_from(exports.len()).unwrap()]);
        wasm.extend(exports);
        wasm.extend([10, 13, 3, 2, 0, 0x0b, 3, 0, 0x00, 0x0b, 4, 0, 0x41, 0, 0x0b]);
        let mut envoy = Envoy::new(Module::from_bytes(&wasm).unwrap());
        envoy.configure(1, "{}");
    }

    /// A module importing one `(i32) -> i32` function and exporting an empty
    /// `proxy_abi_version_0_2_1`.
    fn module_importing(module: &str, name: &str) -> Vec<u8> {
        fn section(id: u8, body: Vec<u8>) -> Vec<u8> {
            let mut out = vec![id, u8::try_from(body.len()).unwrap()];
            out.extend(body);
            out
        }
        fn string(s: &str) -> Vec<u8> {
            let mut out = vec![u8::try_from(s.len()).unwrap()];
            out.extend(s.as_bytes());
            out
        }
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        // Types: 0 = (i32) -> i32, 1 = () -> ().
        wasm.extend(section(1, vec![2, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 0, 0]));
        let mut import = vec![1];
        import.extend(string(module));
        import.extend(string(name));
        import.extend([0, 0]);
        wasm.extend(section(2, import));
        wasm.extend(section(3, vec![1, 1]));
        let mut export = vec![1];
        export.extend(string("proxy_abi_version_0_2_1"));
        export.extend([0, 1]);
        wasm.extend(section(7, export));
        wasm.extend(section(10, vec![1, 2, 0, 0x0b]));
        wasm
    }
}
