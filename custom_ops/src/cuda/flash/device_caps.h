// Host-side facts about the current CUDA device that the flash path asks for on every call,
// read once per device instead of in about 40 runtime queries per node (FlashSupports and
// MakeLayout run several times a call). docs/benchmarks-cuda.md, sixth session, has the node's
// host time after the change.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <mutex>

namespace pasa::cuda::flash {

constexpr int kCachedDevices = 64;  // devices past this are asked every time

struct DeviceCaps {
  int cc_major = 0, cc_minor = 0;  // 0: unknown (the queries failed)
  int max_smem_optin = 0;          // opt-in shared memory per block, bytes
};

// The current device's caps (all zero when the runtime cannot tell).
inline DeviceCaps CurrentDeviceCaps() {
  const auto read = [](int dev) {
    DeviceCaps c;
    if (cudaDeviceGetAttribute(&c.cc_major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&c.cc_minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&c.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
      return DeviceCaps{};
    return c;
  };
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return DeviceCaps{};
  if (dev < 0 || dev >= kCachedDevices) return read(dev);
  static DeviceCaps caps[kCachedDevices];
  static std::once_flag once[kCachedDevices];
  std::call_once(once[dev], [&] { caps[dev] = read(dev); });
  return caps[dev];
}

// cudaFuncSetAttribute(kernel, MaxDynamicSharedMemorySize, bytes) once per kernel, device and
// size instead of before every launch. `Kernel` is the __global__ function itself, so each kernel
// has its own record.
template <auto Kernel>
cudaError_t AllowDynamicSmem(int bytes) {
  static std::atomic<int> allowed[kCachedDevices];  // static storage: starts at zero
  static std::mutex mutex;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const bool cached = dev >= 0 && dev < kCachedDevices;
  if (cached && allowed[dev].load(std::memory_order_acquire) >= bytes) return cudaSuccess;
  const std::lock_guard<std::mutex> lock(mutex);
  const int want = cached ? std::max(bytes, allowed[dev].load(std::memory_order_relaxed)) : bytes;
  e = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, want);
  if (e == cudaSuccess && cached) allowed[dev].store(want, std::memory_order_release);
  return e;
}

}  // namespace pasa::cuda::flash
