// Registration hooks: each .cpp file adds its functions to detkit._C.
#pragma once

#include "common.h"

namespace detkit {
void register_validate(py::module_& m);
void register_box_iou(py::module_& m);
void register_nms(py::module_& m);
void register_soft_nms(py::module_& m);
void register_ssd_assign(py::module_& m);
}  // namespace detkit
