// Kernel bodies of the CPU depthwise conv2d (forward, grad-input, grad-weight).
//
// NOT an ordinary header: csrc/cpu/depthwise_conv2d.cpp includes it once per ISA, inside
// `namespace convext::cpu::<isa>`, with CONVEXT_VEC_BYTES set to that ISA's vector width
// (16 baseline, 32 under `#pragma GCC target("avx2,fma")`, 64 under avx512f), and picks
// one copy at run time. It includes only the per-ISA pieces below (every standard / ATen header
// is included by the .cpp first) and uses TapRange (tap_range.h) and Geometry (the .cpp).
//
// Loop structure (every tensor is read in place through its element strides):
//   * conv_nchw -- output in NCHW: parallel over output planes. The input plane is copied
//     into a zero-padded acc_t buffer (no border cases), then each output row is held in
//     vector registers, blocks of up to 4 x VL columns, while all taps accumulate into it.
//   * conv_cl -- output channels_last: parallel over (n, h) rows; blocks of 4 pixels x
//     2 vectors of channels stay in registers across all taps.
//   Both also serve grad-input at stride 1 (a conv of grad_output with the flipped
//   kernel, Geometry::reduce summing the M output channels of one input channel);
//   grad-input at stride > 1 uses a scatter (NCHW) or gather (channels_last) kernel.
//   * grad-weight: NCHW-ish -> per (channel, batch chunk) vector dot products of padded rows;
//     channels innermost -> per row chunk, per tap, register accumulation over the row.
//     Partials are reduced in a fixed order: deterministic, independent of threads.
// Rows that are not unit-stride or not in the accumulation type are first converted into
// a small contiguous acc_t buffer, so the inner loops always see unit-stride acc_t rows.

#ifndef CONVEXT_VEC_BYTES
#error "depthwise_conv2d_kernel.h: define CONVEXT_VEC_BYTES before including"
#endif

// The pieces, each a per-ISA header (no include guard, compiled once per ISA copy):
#include "cpu/kernel_vec.h"                            // Vec<T>, vload / vstore / vzero
#include "cpu/kernel_helpers.h"                        // row_as_acc, pad_row, axpy_scatter, grain_for
#include "cpu/depthwise_conv2d_fwd_kernel.h"           // conv_nchw, conv_cl
#include "cpu/depthwise_conv2d_bwd_input_kernel.h"     // backward_input_nchw, backward_input_cl
#include "cpu/depthwise_conv2d_bwd_weight_kernel.h"    // backward_weight_planes, backward_weight_cl
#include "cpu/depthwise_conv2d_cblock_kernel.h"        // conv_nchw_cb, backward_input_nchw_cb, backward_weight_nchw_cb
