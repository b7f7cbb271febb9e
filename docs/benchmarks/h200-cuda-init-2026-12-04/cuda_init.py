"""Time CUDA initialisation in a fresh process, as llama-server pays it at start: load libcuda, cuInit,
retain the primary context of device 0, allocate, and copy host->device (pageable and pinned)."""
import ctypes, json, sys, time
t0 = time.perf_counter()
cuda = ctypes.CDLL("libcuda.so.1")
t_load = time.perf_counter()
def ok(r, what):
    if r != 0:
        raise SystemExit(f"{what} failed: {r}")
ok(cuda.cuInit(0), "cuInit"); t_init = time.perf_counter()
dev = ctypes.c_int(); ok(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
ctx = ctypes.c_void_p(); ok(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "retain")
ok(cuda.cuCtxSetCurrent(ctx), "setcurrent"); t_ctx = time.perf_counter()
n = 1 << 30
dptr = ctypes.c_uint64(); ok(cuda.cuMemAlloc_v2(ctypes.byref(dptr), ctypes.c_size_t(n)), "alloc"); t_alloc = time.perf_counter()
buf = ctypes.create_string_buffer(n)
ok(cuda.cuMemcpyHtoD_v2(dptr, buf, ctypes.c_size_t(n)), "warm copy")
cuda.cuCtxSynchronize()
a = time.perf_counter(); ok(cuda.cuMemcpyHtoD_v2(dptr, buf, ctypes.c_size_t(n)), "copy"); cuda.cuCtxSynchronize(); pageable = n / (time.perf_counter() - a) / 1e9
hp = ctypes.c_void_p(); ok(cuda.cuMemAllocHost_v2(ctypes.byref(hp), ctypes.c_size_t(n)), "pinned")
ok(cuda.cuMemcpyHtoD_v2(dptr, hp, ctypes.c_size_t(n)), "warm pinned"); cuda.cuCtxSynchronize()
a = time.perf_counter(); ok(cuda.cuMemcpyHtoD_v2(dptr, hp, ctypes.c_size_t(n)), "copy pinned"); cuda.cuCtxSynchronize(); pinned = n / (time.perf_counter() - a) / 1e9
print(json.dumps({"load_libcuda_s": t_load - t0, "cuInit_s": t_init - t_load, "primary_context_s": t_ctx - t_init,
                  "first_alloc_1GiB_s": t_alloc - t_ctx, "total_to_first_alloc_s": t_alloc - t0,
                  "htod_pageable_GB_s": pageable, "htod_pinned_GB_s": pinned}))
